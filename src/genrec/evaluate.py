"""Evaluation: constrained beam search over the test split, MiniOneRec-compatible results.

Writes ``eval_results.json`` (a list of ``{"input", "output", "predict", ...}`` rows as
MiniOneRec's ``final_result_*.json``, plus our ``user_id``, ``item_id`` and ``scores``) and
``metrics.json`` (the metrics of :mod:`genrec.metrics` with 95% bootstrap intervals, throughput
in users/s, peak memory, the batch size used and the decoding settings). Decoding is
:func:`genrec.decoding.rank`: constrained beam search, or (``mode: exact``) the whole catalogue scored.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from genrec.data.format import read_split
from genrec.decoding import SIDTrie, rank
from genrec.devices import peak_memory_gb, pick_device, reset_peak_memory
from genrec.io import read_json
from genrec.logs import log_settings
from genrec.prompts import end_of_response_id, next_item_text, prompt_ids
from genrec.results import write_results
from genrec.settings import EvalSettings
from genrec.sids.format import load_index, sid_strings
from genrec.training.checkpoints import check_trained_index, load_checkpoint, prompt_max_length

log = logging.getLogger(__name__)


def evaluate(
    settings: EvalSettings,
    policy_json: str,
    split_csv: str,
    sid_index: str,
    results_json: str,
    metrics_json: str,
    threads: int | None = None,
) -> dict:
    """Rank SIDs for every row of a split with the policy's checkpoint and save results.

    Args:
        settings: decoding settings.
        policy_json: the RL stage's ``policy.json`` naming the checkpoint to evaluate.
        split_csv: the split to evaluate (test by default).
        sid_index: the cell's ``index.json``.
        results_json, metrics_json: outputs.
        threads: CPU threads for torch.

    Returns:
        The metrics.
    """
    log_settings(log, "evaluate", settings)
    if threads:
        torch.set_num_threads(threads)
    policy = read_json(policy_json, "policy file")
    device = pick_device()
    model, tokenizer = load_checkpoint(policy["checkpoint"], dtype=decode_dtype(settings.dtype, device))
    model.to(device)
    check_trained_index(policy["checkpoint"], sid_index)
    index = load_index(sid_index)
    sids = sid_strings(index)
    trie = SIDTrie.from_index(index, tokenizer).to(device)
    df = read_split(split_csv, n_items=len(index))
    if settings.max_users:
        df = df.head(settings.max_users)
    hists = [[sids[i] for i in h] for h in df["history"]]
    budget = prompt_max_length(policy["checkpoint"])
    prompts = [prompt_ids(tokenizer, h, budget) for h in hists]
    reset_peak_memory()
    ranking = rank(
        model,
        prompts,
        trie,
        tokenizer.pad_token_id,
        mode=settings.mode,
        num_beams=settings.num_beams,
        top_k=settings.list_length,
        max_batch=settings.batch_size,
        memory_fraction=settings.memory_fraction,
        eos_id=end_of_response_id(tokenizer) if settings.score_eos else None,
        chunk=settings.exact_chunk,
    )
    rows, targets = [], []
    for i, (user, target) in enumerate(zip(df["user_id"], df["item_id"])):
        keep = ranking.items[i] >= 0
        pred_items = ranking.items[i][keep].tolist()
        rows.append(
            {
                "input": next_item_text(hists[i]),
                "output": sids[int(target)],
                "predict": [sids[j] for j in pred_items],
                "user_id": user,
                "item_id": int(target),
                "predict_items": pred_items,
                "scores": [round(x, 5) for x in ranking.scores[i][keep].tolist()],
            }
        )
        targets.append(sids[int(target)])
    extra = {
        "users_per_s": len(rows) / ranking.seconds,
        "decode_time_s": ranking.seconds,
        "peak_memory_gb": peak_memory_gb(),
        "batch_size_used": ranking.batch_size,
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "device": str(device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "checkpoint": policy["checkpoint"],
        "settings": settings.to_dict(),
        "split": Path(split_csv).stem,
    }
    return write_results(rows, targets, set(sids.values()), results_json, metrics_json, extra, settings.bootstrap)


def decode_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weight dtype for decoding: ``auto`` is bfloat16 on a GPU and float32 on CPU.

    >>> decode_dtype("auto", torch.device("cpu")), decode_dtype("bfloat16", torch.device("cpu"))
    (torch.float32, torch.bfloat16)
    """
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)
