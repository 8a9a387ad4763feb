"""The most-popular baseline (rule ``baseline_popularity``): every user gets the most frequent training targets."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from genrec.data.format import read_items, read_split
from genrec.logs import log_settings
from genrec.results import write_item_rankings
from genrec.settings import PopularitySettings

log = logging.getLogger(__name__)


def popularity_ranking(train_targets: list[int], n_items: int, top_k: int) -> list[int]:
    """Items by how often they are a training target, ties broken by lower item id.

    >>> popularity_ranking([3, 1, 3, 2, 1, 3], n_items=5, top_k=3)
    [3, 1, 2]
    """
    counts = Counter(train_targets)
    return sorted(range(n_items), key=lambda i: (-counts.get(i, 0), i))[:top_k]


def popularity(
    settings: PopularitySettings,
    train_csv: str,
    split_csv: str,
    item_json: str,
    results_json: str,
    metrics_json: str,
    bootstrap: str = "user",
) -> dict:
    """Rank the most popular training targets for every row of a split.

    Items are identified by id (the ``predict`` lists hold item ids as strings), so the
    baseline needs no SID index; the metrics are the same functions as for the LLM cells.

    Args:
        settings: the list length.
        train_csv: the training split, whose targets are counted.
        split_csv: the split to rank (``eval.split`` in the workflow).
        item_json: the catalogue.
        results_json, metrics_json: outputs.
        bootstrap: what the intervals resample (``eval.bootstrap``).
    """
    log_settings(log, "popularity", settings)
    items = read_items(item_json)
    train = read_split(train_csv, n_items=len(items))
    test = read_split(split_csv, n_items=len(items))
    split = Path(split_csv).stem
    ranking = popularity_ranking(train["item_id"].tolist(), len(items), settings.top_k)
    return write_item_rankings(
        test,
        [ranking] * len(test),
        len(items),
        results_json,
        metrics_json,
        {"settings": settings.to_dict(), "split": split},
        bootstrap,
    )
