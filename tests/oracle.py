"""The decoding oracle: Hugging Face beam search with a prefix-allowed-tokens function (MiniOneRec's way).

Used by the tests (our decoder must return exactly its top-K and scores) and by bench/decoding.py
(the speed it must beat). Sampling off, no length penalty (scores are sums of SID token
log-probabilities), exactly the longest SID length of new tokens, and the model's generation-config
defaults (top_k/top_p/temperature) overridden. A SID shorter than the longest is followed by filler
tokens of log-prob 0, which is what our decoder's STAY does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

FILLER = 100  # an ordinary token appended to a finished shorter SID (never an EOS)


class _FinishedSIDIsFree:
    """After a finished SID only the filler is allowed, with log-prob 0 (scores are already log-softmaxed)."""

    def __init__(self, done):
        self.done = done

    def __call__(self, input_ids, scores):
        for r, ids in enumerate(input_ids):
            if self.done(ids):
                scores[r] = float("-inf")
                scores[r, FILLER] = 0.0
        return scores


class _OnlyEOSAfterSID:
    """After a finished SID only the EOS is allowed, at the model's own log-probability (MiniOneRec's scoring)."""

    def __init__(self, done, eos_id):
        self.done, self.eos_id = done, eos_id

    def __call__(self, input_ids, scores):
        for r, ids in enumerate(input_ids):
            if self.done(ids):
                keep = scores[r, self.eos_id].clone()
                scores[r] = float("-inf")
                scores[r, self.eos_id] = keep
        return scores


def hf_constrained_beam_search(
    model,
    prompts: Sequence[Sequence[int]],
    tok,
    index: Mapping[int, Sequence[str]],
    num_beams: int,
    eos_id: int | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Top ``num_beams`` items per prompt and their scores ``(B, num_beams)``, best first.

    With ``eos_id`` the search also generates the EOS after each SID (only it is allowed there) and
    scores it, as MiniOneRec's evaluation does (SIDs of one length only).
    """
    from transformers import LogitsProcessorList

    seqs = {tuple(tok.convert_tokens_to_ids(list(t))): i for i, t in index.items()}
    prefixes: dict[tuple, set] = {}
    for s in seqs:
        for k in range(len(s)):
            prefixes.setdefault(s[:k], set()).add(s[k])
    length = max(map(len, seqs))
    device = next(model.parameters()).device
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1

    def sid_of(row):
        new = row[width:].tolist()
        while new and (new[-1] == FILLER or (eos_id is not None and new[-1] in (eos_id, tok.pad_token_id))):
            new.pop()
        return tuple(new)

    def done(row):
        return sid_of(row) in seqs

    def allowed(_, row):
        if done(row):
            return [FILLER] if eos_id is None else [eos_id]
        return sorted(prefixes[sid_of(row)])

    finished = _FinishedSIDIsFree(done) if eos_id is None else _OnlyEOSAfterSID(done, eos_id)

    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=length + (eos_id is not None),
        min_new_tokens=length,
        do_sample=False,
        top_k=None,
        top_p=None,
        temperature=None,
        length_penalty=0.0,
        early_stopping=True,
        prefix_allowed_tokens_fn=allowed,
        logits_processor=LogitsProcessorList([finished]),
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
        **({"eos_token_id": eos_id} if eos_id is not None else {}),
    )
    items = [seqs[sid_of(s)] for s in out.sequences]
    return [items[r * num_beams : (r + 1) * num_beams] for r in range(len(prompts))], out.sequences_scores.view(
        len(prompts), num_beams
    )
