"""Ranking metrics: the one definition used by every model and baseline.

Each test row has one relevant item. With ``r`` the 0-based position of the target in the
ranked list (absent = miss):

* ``HR@K``   = mean of 1[r < K]
* ``NDCG@K`` = mean of 1[r < K] / log2(r + 2)   (IDCG = 1 with one relevant item)
* ``MRR``    = mean of 1 / (r + 1), 0 for a miss, over the whole list (its length is reported)
* ``invalid_rate`` = share of predicted entries that are not a SID of the index
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

KS = (1, 3, 5, 10, 20)


def target_rank(predictions: Sequence[str], target: str) -> int | None:
    """0-based position of ``target`` in ``predictions``, or None.

    >>> target_rank(["<a_1>", "<a_2>"], "<a_2>"), target_rank(["<a_1>"], "<a_3>")
    (1, None)
    """
    for r, p in enumerate(predictions):
        if p == target:
            return r
    return None


def ranking_metrics(
    predictions: Sequence[Sequence[str]],
    targets: Sequence[str],
    valid: Collection[str],
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR and invalid rate over all rows.

    Args:
        predictions: per row, the ranked list of predicted SIDs (best first).
        targets: per row, the target SID.
        valid: every SID of the index.
        ks: cut-offs; a K beyond the list length is not reported.

    Returns:
        ``{"HR@K": ..., "NDCG@K": ..., "MRR": ..., "invalid_rate": ..., "n": ..., "list_length": ...}``.

    Raises:
        ValueError: no rows, or predictions and targets differ in length.
    """
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"need one prediction list per target, got {len(predictions)} and {len(targets)}")
    n = len(targets)
    length = max(len(p) for p in predictions)
    ranks = [target_rank(p, t) for p, t in zip(predictions, targets)]
    out: dict[str, float] = {"n": n, "list_length": length}
    for k in ks:
        if k > length:
            continue
        out[f"HR@{k}"] = sum(r is not None and r < k for r in ranks) / n
        out[f"NDCG@{k}"] = sum(1.0 / math.log2(r + 2) for r in ranks if r is not None and r < k) / n
    out["MRR"] = sum(1.0 / (r + 1) for r in ranks if r is not None) / n
    total = sum(len(p) for p in predictions)
    out["invalid_rate"] = sum(x not in valid for p in predictions for x in p) / total if total else 0.0
    return out


def row_ranks(rows: Sequence[dict]) -> list[int | None]:
    """Per-row 0-based rank of the target item in an ``eval_results.json`` list (None = miss).

    Uses item ids (``item_id``, ``predict_items``), so LLM cells and baselines compare row by row.
    """
    return [target_rank([str(i) for i in r["predict_items"]], str(r["item_id"])) for r in rows]


def per_row(ranks: Sequence[int | None], metric: str) -> list[float]:
    """Per-row values of ``HR@K``, ``NDCG@K`` or ``MRR`` (their mean is the metric)."""
    if metric == "MRR":
        return [0.0 if r is None else 1.0 / (r + 1) for r in ranks]
    name, k = metric.split("@")
    k = int(k)
    if name == "HR":
        return [float(r is not None and r < k) for r in ranks]
    if name == "NDCG":
        return [1.0 / math.log2(r + 2) if r is not None and r < k else 0.0 for r in ranks]
    raise ValueError(f"unknown metric {metric!r}")


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over rows with a 95% percentile bootstrap interval (rows resampled together).

    Returns:
        ``{"diff", "ci_low", "ci_high", "p_value"}`` where ``p_value`` is the two-sided bootstrap
        share of resampled differences on the other side of zero.
    """
    import numpy as np

    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(x) == 0:
        raise ValueError("paired_bootstrap needs at least one row")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return {
        "diff": float(x.mean()),
        "ci_low": float(np.percentile(means, 2.5)),
        "ci_high": float(np.percentile(means, 97.5)),
        "p_value": float(min(1.0, p)),
    }
