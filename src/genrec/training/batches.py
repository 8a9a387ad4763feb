"""Batches of tokenised prompt + response examples, and the loss on the response only.

Every training stage with a written answer (recommendation SFT, the general SFT track) builds
examples as ``{"input_ids", "labels"}`` with ``labels`` -100 outside the response, and trains on
batches from :func:`collate` with :func:`response_loss`.
"""

from __future__ import annotations

import torch


class Examples(torch.utils.data.Dataset):
    """Tokenised examples (``input_ids``, ``labels``) as a map-style dataset."""

    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor | int]:
    """Left-pad a batch so that every response ends at the last position.

    Left padding lines the responses up at the end of the rows, so the LM head only needs the
    last ``logits_to_keep`` positions (the response and the token before it) instead of the
    whole sequence: the head over a 49k vocabulary is a fifth of a small model's compute.
    Position ids skip the padding, as in :func:`genrec.decoding.constrained_beam_search`.
    """
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[r, width - n :] = torch.tensor(b["input_ids"])
        labels[r, width - n :] = torch.tensor(b["labels"])
        mask[r, width - n :] = 1
    response = max(sum(x != -100 for x in b["labels"]) for b in batch)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        "labels": labels,
        "logits_to_keep": response + 1,
    }


def response_loss(outputs, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the response tokens from the last ``K`` logits (see :func:`collate`).

    Args:
        outputs: model outputs whose ``logits`` are ``(B, K, V)``, the last K positions.
        labels: ``(B, T)`` with -100 outside the response.
        num_items_in_batch: response tokens in the whole accumulated batch (Trainer passes it
            so that gradient accumulation averages over tokens, not micro-batches).
    """
    logits = outputs.logits  # (B, K, V): positions T-K..T-1
    k = logits.shape[1]
    target = labels[:, -(k - 1) :].to(logits.device)  # (B, K-1): tokens T-K+1..T-1
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    n = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
    return loss / n


class ResumableLengthGroupedSampler(torch.utils.data.Sampler):
    """Transformers' length-grouped order, which a resumed run can draw again.

    Each epoch's order is drawn, as ``LengthGroupedSampler`` draws it, from the global torch RNG at
    the epoch's start; that RNG state is kept (:attr:`epoch_rng`) and saved with every intermediate
    checkpoint. A run resumed mid-epoch passes it back (``resume``) and gets the same order, where
    Transformers' own sampler would draw a new one from the RNG state at the checkpoint.
    """

    def __init__(self, batch_size: int, lengths: list[int], resume: dict[int, torch.Tensor] | None = None):
        self.batch_size, self.lengths = batch_size, lengths
        self.resume = dict(resume or {})  # epoch -> RNG state at that epoch's start
        self.epoch, self.epoch_rng = 0, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        saved = self.resume.pop(self.epoch, None)
        if saved is None:
            self.epoch_rng = torch.get_rng_state()
            return iter(get_length_grouped_indices(self.lengths, self.batch_size))
        self.epoch_rng = saved
        generator = torch.Generator()
        generator.set_state(saved)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
