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


def hf_constrained_beam_search(
    model, prompts: Sequence[Sequence[int]], tok, index: Mapping[int, Sequence[str]], num_beams: int
) -> tuple[list[list[int]], torch.Tensor]:
    """Top ``num_beams`` items per prompt and their scores ``(B, num_beams)``, best first."""
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
        while new and new[-1] == FILLER:
            new.pop()
        return tuple(new)

    def done(row):
        return sid_of(row) in seqs

    def allowed(_, row):
        return [FILLER] if done(row) else sorted(prefixes[sid_of(row)])

    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=length,
        min_new_tokens=length,
        do_sample=False,
        top_k=None,
        top_p=None,
        temperature=None,
        length_penalty=0.0,
        early_stopping=True,
        prefix_allowed_tokens_fn=allowed,
        logits_processor=LogitsProcessorList([_FinishedSIDIsFree(done)]),
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
    )
    items = [seqs[sid_of(s)] for s in out.sequences]
    return [items[r * num_beams : (r + 1) * num_beams] for r in range(len(prompts))], out.sequences_scores.view(
        len(prompts), num_beams
    )
