"""The results format every ranked list is written in: ``eval_results.json`` and ``metrics.json``.

``eval_results.json`` is a list of MiniOneRec's rows (``input``, ``output``, ``predict``: the target
and the ranked predictions, SIDs for an LLM cell) plus our ``user_id``, ``item_id`` and, for LLM
cells, ``predict_items`` and ``scores``. ``metrics.json`` holds the metrics of :mod:`genrec.metrics`
with 95% bootstrap intervals and the writer's own facts (throughput, settings). LLM cells
(:mod:`genrec.evaluate`) and baselines (:mod:`genrec.baselines`) write through the same two functions.
"""

from __future__ import annotations

import logging

from genrec.io import write_json
from genrec.metrics import ranking_metrics

log = logging.getLogger(__name__)


def write_results(
    rows: list[dict],
    targets: list[str],
    valid: set[str],
    results_json: str,
    metrics_json: str,
    extra: dict,
    bootstrap: str = "user",
) -> dict:
    """Compute metrics for ranked rows and write both result files (shared with the baselines).

    ``bootstrap`` is what the intervals resample: ``user`` (each row's ``user_id`` with all its rows)
    or ``row`` (see :mod:`genrec.metrics`).

    Raises:
        RuntimeError: a prediction is not in ``valid`` (constrained decoding and the baselines only
            rank real items, so this is a bug); nothing is written.
    """
    users = [str(r["user_id"]) for r in rows] if bootstrap == "user" else None
    metrics = ranking_metrics([r["predict"] for r in rows], targets, valid, users=users)
    if metrics["invalid_rate"] != 0:
        raise RuntimeError(f"{metrics['invalid_rate']:.2%} of predicted entries are not valid items; nothing written")
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


def write_item_rankings(
    test,
    rankings: list[list[int]],
    n_items: int,
    results_json: str,
    metrics_json: str,
    extra: dict,
    bootstrap: str = "user",
) -> dict:
    """Score per-row rankings of item ids against a split's targets and write both result files.

    The rows follow MiniOneRec's format with item ids standing in for SIDs (``predict`` holds them
    as strings), so every id-based baseline is scored by the same metrics code as the LLM cells.
    """
    rows = [
        {
            "input": h,
            "output": str(t),
            "predict": [str(i) for i in ranking],
            "user_id": u,
            "item_id": int(t),
            "predict_items": [int(i) for i in ranking],
        }
        for u, h, t, ranking in zip(test["user_id"], test["history_item_id"], test["item_id"], rankings)
    ]
    targets = [str(t) for t in test["item_id"]]
    return write_results(rows, targets, {str(i) for i in range(n_items)}, results_json, metrics_json, extra, bootstrap)
