"""Non-LLM baselines scored through the same metrics code as the LLM cells."""

from __future__ import annotations

import logging
import os
from collections import Counter

from genrec.data.format import read_items, read_split
from genrec.evaluate import write_results
from genrec.logs import log_settings
from genrec.settings import PopularitySettings

log = logging.getLogger(__name__)


def popularity_ranking(train_targets: list[int], n_items: int, top_k: int) -> list[int]:
    """Items by how often they are a training target, ties broken by lower item id.

    >>> popularity_ranking([3, 1, 3, 2, 1, 3], n_items=5, top_k=3)
    [3, 1, 2]
    """
    counts = Counter(train_targets)
    return sorted(range(n_items), key=lambda i: (-counts.get(i, 0), i))[:top_k]


def popularity(settings: PopularitySettings, data_dir: str, split: str, results_json: str, metrics_json: str) -> dict:
    """Rank the most popular training targets for every row of a split.

    Items are identified by id (the ``predict`` lists hold item ids as strings), so the
    baseline needs no SID index; the metrics are the same functions as for the LLM cells.
    """
    log_settings(log, "popularity", settings)
    items = read_items(os.path.join(data_dir, "item.json"))
    train = read_split(os.path.join(data_dir, "train.csv"), n_items=len(items))
    test = read_split(os.path.join(data_dir, f"{split}.csv"), n_items=len(items))
    ranking = popularity_ranking(train["item_id"].tolist(), len(items), settings.top_k)
    return write_item_rankings(
        test,
        [ranking] * len(test),
        len(items),
        results_json,
        metrics_json,
        {"settings": settings.to_dict(), "split": split},
    )


def write_item_rankings(
    test, rankings: list[list[int]], n_items: int, results_json: str, metrics_json: str, extra: dict
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
    return write_results(rows, targets, {str(i) for i in range(n_items)}, results_json, metrics_json, extra)
