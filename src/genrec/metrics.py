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
