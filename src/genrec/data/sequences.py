"""From interaction logs to next-item samples with MiniOneRec's global chronological split.

Shared by the synthetic generator and the raw Amazon preprocessing so that both produce data
by exactly the same rules (MiniOneRec ``data/amazon18_data_process.py``):

* users and items are numbered in order of first appearance while iterating users in order of
  first appearance, each user's interactions sorted by time (stable, so same-time ties keep
  input order);
* every position ``i >= 1`` of a user's sequence is one sample whose history is the up to
  ``max_history`` preceding items;
* all samples are pooled, stably sorted by the target's timestamp and cut globally 8:1:1.
  Because the cut is on time, every training target precedes every test target: no test
  interaction can reach training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from genrec.data.format import Sample

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Interaction:
    """One review: who, what, when (Unix seconds)."""

    user: str
    item: str
    timestamp: int


@dataclass(frozen=True)
class SplitResult:
    """Samples per split plus the id maps used to number users and items."""

    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]
    item_ids: dict[str, int]  # original item key -> contiguous id
    user_ids: dict[str, int]  # original user key -> contiguous id
    target_times: dict[str, list[int]]  # split -> target timestamps, row-aligned


def chronological_split(
    interactions: Iterable[Interaction],
    max_history: int = 10,
    ratios: tuple[float, float] = (0.8, 0.9),
) -> SplitResult:
    """Number users and items, build samples and cut them globally by target time.

    Args:
        interactions: the filtered reviews, in input order.
        max_history: the longest history kept (MiniOneRec: 10).
        ratios: cumulative cut points for train and valid (MiniOneRec: 0.8 and 0.9).

    Returns:
        The three sample lists and the id maps.

    Raises:
        ValueError: no sample can be built (every user has a single interaction).
    """
    by_user: dict[str, list[Interaction]] = {}
    for it in interactions:
        by_user.setdefault(it.user, []).append(it)
    user_ids: dict[str, int] = {}
    item_ids: dict[str, int] = {}
    pooled: list[tuple[int, Sample]] = []
    for user, seq in by_user.items():
        seq = sorted(seq, key=lambda x: x.timestamp)  # stable: same-day ties keep file order
        uid = user_ids.setdefault(user, len(user_ids))
        ids = [item_ids.setdefault(x.item, len(item_ids)) for x in seq]
        for i in range(1, len(seq)):
            hist = tuple(ids[max(0, i - max_history) : i])
            pooled.append((seq[i].timestamp, Sample(f"A{uid}", hist, ids[i])))
    if not pooled:
        raise ValueError("no user has two or more interactions: nothing to predict")
    pooled.sort(key=lambda x: x[0])  # stable, as MiniOneRec
    n = len(pooled)
    a, b = int(ratios[0] * n), int(ratios[1] * n)
    parts = {"train": pooled[:a], "valid": pooled[a:b], "test": pooled[b:]}
    return SplitResult(
        train=[s for _, s in parts["train"]],
        valid=[s for _, s in parts["valid"]],
        test=[s for _, s in parts["test"]],
        item_ids=item_ids,
        user_ids=user_ids,
        target_times={k: [t for t, _ in v] for k, v in parts.items()},
    )


def kcore_filter(interactions: list[Interaction], user_k: int, item_k: int) -> list[Interaction]:
    """Iteratively drop users with fewer than ``user_k`` and items with fewer than ``item_k`` reviews.

    Unlike MiniOneRec (whose ``--item_k`` is parsed but ignored), both thresholds apply.
    Repeated (user, item) reviews are kept and counted, as MiniOneRec does.
    """
    current = list(interactions)
    while True:
        u_count: dict[str, int] = {}
        i_count: dict[str, int] = {}
        for x in current:
            u_count[x.user] = u_count.get(x.user, 0) + 1
            i_count[x.item] = i_count.get(x.item, 0) + 1
        kept = [x for x in current if u_count[x.user] >= user_k and i_count[x.item] >= item_k]
        if len(kept) == len(current):
            return kept
        current = kept


def reindex_items(item_ids: Mapping[str, int], meta: Mapping[str, Mapping[str, str]]) -> dict[int, dict[str, str]]:
    """Item metadata keyed by the contiguous ids of :func:`chronological_split`."""
    return {i: dict(meta[key]) for key, i in sorted(item_ids.items(), key=lambda kv: kv[1])}


def split_frames(split: SplitResult, items: Mapping[int, Mapping[str, str]]) -> dict[str, pd.DataFrame]:
    """The three MiniOneRec-format frames (SID columns empty) of a split result."""
    from genrec.data.format import samples_to_frame

    return {name: samples_to_frame(getattr(split, name), items) for name in ("train", "valid", "test")}
