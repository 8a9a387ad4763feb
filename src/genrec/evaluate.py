"""Evaluation: constrained beam search over the test split, MiniOneRec-compatible results.

Writes ``eval_results.json`` (a list of ``{"input", "output", "predict", ...}`` rows as
MiniOneRec's ``final_result_*.json``, plus our ``user_id``, ``item_id`` and ``scores``) and
``metrics.json`` (the metrics of :mod:`genrec.metrics`, throughput and settings).
"""

from __future__ import annotations

import logging
import math
import time

import torch
from tqdm.auto import tqdm

from genrec.data.format import read_split
from genrec.decoding import SIDTrie, constrained_beam_search
from genrec.io import read_json, write_json
from genrec.logs import log_settings
from genrec.metrics import ranking_metrics
from genrec.models import load_checkpoint, peak_memory_gb, pick_device
from genrec.prompts import next_item_text, prompt_ids
from genrec.settings import EvalSettings
from genrec.sids import load_index, sid_strings

log = logging.getLogger(__name__)


def write_results(
    rows: list[dict], targets: list[str], valid: set[str], results_json: str, metrics_json: str, extra: dict
) -> dict:
    """Compute metrics for ranked rows and write both result files (shared with the baselines)."""
    metrics = ranking_metrics([r["predict"] for r in rows], targets, valid)
    metrics.update(extra)
    write_json(results_json, rows, indent=1)
    write_json(metrics_json, metrics)
    log.info(
        "metrics: %s",
        {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in metrics.items()
            if k.startswith(("HR", "NDCG", "MRR", "invalid"))
        },
    )
    return metrics


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
    model, tokenizer = load_checkpoint(policy["checkpoint"])
    device = pick_device()
    model.to(device)
    index = load_index(sid_index)
    sids = sid_strings(index)
    trie = SIDTrie.from_index(index, tokenizer).to(device)
    df = read_split(split_csv, n_items=len(index))
    if settings.max_users:
        df = df.head(settings.max_users)
    hists = [[sids[i] for i in h] for h in df["history"]]
    prompts = [prompt_ids(tokenizer, h) for h in hists]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths batch together
    ranked: dict[int, tuple[list[int], list[float]]] = {}
    start = time.perf_counter()
    for s in tqdm(
        range(0, len(order), settings.batch_size),
        desc="evaluate",
        unit="batch",
        total=math.ceil(len(order) / settings.batch_size),
    ):
        chunk = order[s : s + settings.batch_size]
        items, scores = constrained_beam_search(
            model, [prompts[i] for i in chunk], trie, settings.num_beams, tokenizer.pad_token_id
        )
        for r, i in enumerate(chunk):
            keep = items[r, : settings.list_length] >= 0
            ranked[i] = (
                items[r, : settings.list_length][keep].tolist(),
                scores[r, : settings.list_length][keep].tolist(),
            )
    elapsed = time.perf_counter() - start
    rows, targets = [], []
    for i, (user, target) in enumerate(zip(df["user_id"], df["item_id"])):
        pred_items, pred_scores = ranked[i]
        rows.append(
            {
                "input": next_item_text(hists[i]),
                "output": sids[int(target)],
                "predict": [sids[j] for j in pred_items],
                "user_id": user,
                "item_id": int(target),
                "predict_items": pred_items,
                "scores": [round(x, 5) for x in pred_scores],
            }
        )
        targets.append(sids[int(target)])
    extra = {
        "users_per_s": len(rows) / elapsed,
        "decode_time_s": elapsed,
        "peak_memory_gb": peak_memory_gb(),
        "device": str(device),
        "checkpoint": policy["checkpoint"],
        "settings": settings.to_dict(),
    }
    return write_results(rows, targets, set(sids.values()), results_json, metrics_json, extra)
