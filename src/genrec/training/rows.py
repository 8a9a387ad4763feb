"""Which rows a training stage uses: seeded subsamples of a split, the same in every stage that asks.

GRPO reads the SFT checkpoint's settings to know which rows SFT trained on; both draw them with
:func:`subsample`, so the two stages agree by construction.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from genrec.data.format import read_split


def subsample(candidates: Sequence[int], max_samples: int, seed: int) -> list[int]:
    """A seeded subsample of ``candidates`` in their order (all of them when ``max_samples`` is 0 or covers them).

    >>> subsample(range(5), 0, seed=0), subsample(range(5), 9, seed=0)
    ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    >>> len(subsample(range(100), 10, seed=0)), subsample(range(100), 10, seed=0) == subsample(range(100), 10, seed=0)
    (10, True)
    """
    candidates = list(candidates)
    if not max_samples or len(candidates) <= max_samples:
        return candidates
    return sorted(random.Random(seed).sample(candidates, max_samples))


def split_rows(csv: str, n_items: int, max_samples: int = 0, seed: int = 0) -> list[tuple[list[int], int]]:
    """``(history, target)`` rows of a split (a seeded subsample when ``max_samples`` > 0)."""
    df = read_split(csv, n_items=n_items)
    rows = list(zip(df["history"], df["item_id"]))
    return [rows[i] for i in subsample(range(len(rows)), max_samples, seed)]
