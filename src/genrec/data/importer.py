"""Import an existing MiniOneRec-format directory (e.g. ``../shared/data/office_products``).

The directory holds ``valid.csv``, ``test.csv``, ``item.json`` and optionally ``train.csv``,
``info.txt`` and ``index.json`` (MiniOneRec's SIDs, kept as ``source.index.json`` so that
published SIDs can be compared with ours). MiniOneRec's own layout
(``train/<name>.csv``, ``valid/<name>.csv``, ...) is accepted too.

Deriving training sequences when ``train.csv`` is absent
--------------------------------------------------------
MiniOneRec's public Office_Products files ship without the train split. Rebuilding it from
valid/test rows must not let a held-out interaction become a training target. Because the split
is a global cut on time, each user's **first** held-out row (the earliest of their valid rows,
else their earliest test row; files are in target-time order) has a history made only of
interactions that happened before any of that user's held-out targets. We turn that history
``h_1..h_n`` into the training samples ``h_1..h_{k-1} -> h_k`` for ``k = 2..n``, with at most
``max_history`` items of history. Later valid/test histories are never used: they contain
held-out targets. The derived train set is smaller than the original one (histories were
capped at 10), and that is documented in ``data_stats.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from genrec.data.format import SPLITS, Sample, parse_list, read_items, read_split, samples_to_frame
from genrec.io import read_json
from genrec.settings import ImportSettings

log = logging.getLogger(__name__)


def _find(root: Path, split: str) -> Path | None:
    flat = root / f"{split}.csv"
    if flat.is_file():
        return flat
    nested = sorted((root / split).glob("*.csv")) if (root / split).is_dir() else []
    if len(nested) > 1:
        raise ValueError(f"{root / split} holds several CSV files {[p.name for p in nested]}; keep one")
    return nested[0] if nested else None


def derive_train(valid: pd.DataFrame, test: pd.DataFrame, max_history: int = 10) -> list[Sample]:
    """Training samples from each user's first held-out history (see the module docstring).

    Args:
        valid: the valid split, rows in target-time order, with a parsed ``history`` column.
        test: the test split, likewise.
        max_history: the longest history of a derived sample.

    Returns:
        The samples, grouped by user in order of first appearance.
    """
    first: dict[str, list[int]] = {}
    for frame in (valid, test):  # valid precedes test in time, so its rows come first
        for user, hist in zip(frame["user_id"], frame["history"]):
            first.setdefault(user, hist)
    out = []
    for user, hist in first.items():
        for k in range(1, len(hist)):
            out.append(Sample(user, tuple(hist[max(0, k - max_history) : k]), hist[k]))
    return out


def source_files(root: str | os.PathLike[str]) -> dict[str, Path]:
    """The files of a MiniOneRec directory that the import reads: ``item``, the splits found, ``index``.

    Missing ones are left out (the import then says which it needs); the workflow declares these as
    the dataset rule's inputs, so that editing one reruns everything built from it.
    """
    root = Path(os.path.expanduser(root))
    if not root.is_dir():
        return {}
    files: dict[str, Path] = {}
    item_path = root / "item.json"
    if not item_path.is_file():
        hits = sorted(root.glob("*.item.json")) + sorted((root / "index").glob("*.item.json"))
        item_path = hits[0] if hits else item_path
    if item_path.is_file():
        files["item"] = item_path
    for split in SPLITS:
        path = _find(root, split)
        if path is not None:
            files[split] = path
    index_path = next((p for p in [root / "index.json", *sorted(root.glob("*.index.json"))] if p.is_file()), None)
    if index_path is not None:
        files["index"] = index_path
    return files


def import_minionerec(settings: ImportSettings) -> tuple[dict[int, dict], dict[str, pd.DataFrame], dict]:
    """Read and check a MiniOneRec-format directory.

    Returns:
        ``(items, splits, stats)``; ``stats["source_index"]`` is the parsed ``index.json`` or None.

    Raises:
        FileNotFoundError: the directory, item.json, valid or test split is missing.
        ValueError: a file is malformed (the message names the file).
    """
    root = Path(os.path.expanduser(settings.path))
    if not root.is_dir():
        raise FileNotFoundError(f"MiniOneRec dataset directory not found: {root}")
    files = source_files(root)
    items = read_items(files.get("item", root / "item.json"))
    frames: dict[str, pd.DataFrame] = {}
    for split in SPLITS:
        if split not in files:
            if split == "train":
                continue
            raise FileNotFoundError(f"{root} has no {split}.csv (nor {split}/*.csv)")
        frames[split] = read_split(files[split], n_items=len(items))
    stats: dict[str, object] = {"source": str(root), "items": len(items)}
    if "train" not in frames:
        samples = derive_train(frames["valid"], frames["test"], settings.max_history)
        if not samples:
            raise ValueError(f"{root}: no train.csv and no history long enough to derive training samples")
        sids = _sid_map(frames)
        frames["train"] = _with_history(samples_to_frame(samples, items, sids or None))
        stats["train_derived"] = True
        stats["train_rule"] = "first held-out history per user, expanded to prefix->next samples"
        log.info(
            "no train split in %s: derived %d training samples from %d users' first held-out histories",
            root,
            len(samples),
            frames["train"]["user_id"].nunique(),
        )
    else:
        stats["train_derived"] = False
    stats["source_index"] = read_json(files["index"], "index file") if "index" in files else None
    stats.update({f"{k}_rows": len(v) for k, v in frames.items()})
    return items, {k: frames[k] for k in SPLITS}, stats


def _sid_map(frames: dict[str, pd.DataFrame]) -> dict[int, str]:
    """Item id -> SID string as recorded in the source's own SID columns (may be empty)."""
    out: dict[int, str] = {}
    for name, df in frames.items():
        for item, sid in zip(df["item_id"], df["item_sid"]):
            if sid:
                out[int(item)] = sid
        for row, (hist, hsid) in enumerate(zip(df["history"], df["history_item_sid"])):
            out.update(zip(hist, parse_list(hsid, f"{name} row {row + 2} history_item_sid")))
    return out


def _with_history(df: pd.DataFrame) -> pd.DataFrame:
    """Add the parsed ``history`` column to a frame built in memory."""
    return df.assign(history=[parse_list(v, "history_item_id") for v in df["history_item_id"]])
