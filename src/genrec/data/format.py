"""MiniOneRec's dataset format: the single place that reads and writes it.

A dataset directory holds:

* ``train.csv``, ``valid.csv``, ``test.csv`` with MiniOneRec's seven columns (:data:`COLUMNS`).
  List columns are Python-literal lists (``"[384, 289]"``, ``"['t1', 't2']"``).
  The SID columns are filled when the source already has SIDs (an imported MiniOneRec
  directory); otherwise they are ``[]`` / empty, and the SID stage writes a complete copy with
  its own SIDs (see :func:`genrec.sid.build_sids`). Downstream stages always take SIDs from the
  cell's ``index.json``, never from these columns.
* ``item.json``: ``{"<item id>": {"title", "description", "brand", "categories"}}`` for ids
  ``0..N-1``.
* ``info.txt``: one line per item, ``SID<TAB>title<TAB>item_id`` (SID empty until assigned).

A prepared dataset (rule ``prepare_data``) also holds ``data_stats.json`` and ``source.index.json``
(the source's own SIDs when it ships them, else ``{}``): :data:`DATASET_FILES`.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from genrec.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

COLUMNS = [
    "user_id",
    "history_item_title",
    "item_title",
    "history_item_id",
    "item_id",
    "history_item_sid",
    "item_sid",
]
SPLITS = ("train", "valid", "test")
ITEM_FIELDS = ("title", "description", "brand", "categories")
DATASET_FILES = {  # a prepared dataset's files: the prepare_data rule's output names -> file names
    "train_csv": "train.csv",
    "valid_csv": "valid.csv",
    "test_csv": "test.csv",
    "item_json": "item.json",
    "info_txt": "info.txt",
    "stats_json": "data_stats.json",
    "source_index": "source.index.json",
}


def dataset_files(directory: str | os.PathLike[str]) -> dict[str, str]:
    """The paths of a prepared dataset's files in ``directory``, by output name.

    >>> dataset_files("d")["test_csv"]
    'd/test.csv'
    """
    return {key: os.path.join(directory, name) for key, name in DATASET_FILES.items()}


def dataset_dir(files: Mapping[str, str | os.PathLike[str]]) -> Path:
    """The directory a prepared dataset's files share (MiniOneRec's format keeps them together).

    Raises:
        ValueError: ``files`` are not exactly :data:`DATASET_FILES`, with their names, in one directory.
    """
    paths = {key: Path(p) for key, p in files.items()}
    parents = {p.parent for p in paths.values()}
    names = {key: p.name for key, p in paths.items()}
    if names != DATASET_FILES or len(parents) != 1:
        raise ValueError(f"a prepared dataset is one directory holding {DATASET_FILES}; got {files}")
    return parents.pop()


@dataclass(frozen=True)
class Sample:
    """One next-item sample: a user's history (oldest first) and the item that followed it."""

    user: str
    history: tuple[int, ...]
    target: int


def samples_to_frame(
    samples: Sequence[Sample],
    items: Mapping[int, Mapping[str, str]],
    sids: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Build a MiniOneRec-format frame from samples.

    Args:
        samples: the rows, in output order.
        items: item id to metadata (at least ``title``).
        sids: item id to SID string; ``None`` leaves the SID columns empty.

    Returns:
        A frame with exactly :data:`COLUMNS`.
    """
    rows = []
    for s in samples:
        hist = list(s.history)
        rows.append(
            {
                "user_id": s.user,
                "history_item_title": repr([items[i]["title"] for i in hist]),
                "item_title": items[s.target]["title"],
                "history_item_id": repr(hist),
                "item_id": s.target,
                "history_item_sid": repr([sids[i] for i in hist]) if sids else "[]",
                "item_sid": sids[s.target] if sids else "",
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def parse_list(value: str, where: str) -> list:
    """Parse a Python-literal list cell safely (never ``eval``)."""
    try:
        out = ast.literal_eval(value)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{where}: cannot parse list cell {value[:80]!r}: {err}") from err
    if not isinstance(out, list):
        raise ValueError(f"{where}: expected a list, got {type(out).__name__}")
    return out


def _id_list(value: str, where: str) -> list[int]:
    """A history cell: a list of integer item ids (``3.7``, ``"3"`` or ``True`` are refused, not coerced)."""
    out = parse_list(value, where)
    bad = [i for i in out if not isinstance(i, int) or isinstance(i, bool)]
    if bad:
        raise ValueError(f"{where}: item ids must be integers, got {bad[0]!r} in {value[:80]!r}")
    return out


def read_split(path: str | os.PathLike[str], n_items: int | None = None) -> pd.DataFrame:
    """Read and check one split CSV.

    Adds a parsed ``history`` column (list of int item ids) next to the seven columns.

    Args:
        path: the CSV file.
        n_items: if given, every item id must lie in ``0..n_items-1``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a column is missing, a list cell does not parse, an id is out of range,
            or the file has no rows.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"split file not found: {p}")
    if p.stat().st_size == 0:
        raise ValueError(f"split file {p} is empty (0 bytes)")
    try:
        df = pd.read_csv(p, dtype={"user_id": str, "item_sid": str, "item_id": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{p} is not a readable CSV: {err}") from err
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{p} lacks column(s) {missing}; MiniOneRec's format needs {COLUMNS}")
    if df.empty:
        raise ValueError(f"{p} has no rows")
    ids = df["item_id"].str.strip()
    bad = ~ids.str.fullmatch(r"-?\d+")
    if bad.any():
        r = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(f"{p} row {r + 2}: item_id must be an integer, got {df['item_id'].iloc[r]!r}")
    df["item_id"] = ids.astype(int)
    df["history"] = [_id_list(v, f"{p} row {r + 2} history_item_id") for r, v in enumerate(df["history_item_id"])]
    if n_items is not None:
        ids = pd.Series([i for h in df["history"] for i in h] + df["item_id"].tolist())
        bad = ids[(ids < 0) | (ids >= n_items)]
        if len(bad):
            raise ValueError(f"{p}: item id {int(bad.iloc[0])} is outside the catalogue 0..{n_items - 1}")
    return df


def read_items(path: str | os.PathLike[str]) -> dict[int, dict[str, str]]:
    """Read ``item.json`` and check that ids are exactly ``0..N-1``.

    Raises:
        FileNotFoundError, ValueError: missing file, bad JSON, non-contiguous ids or no title.
    """
    raw = read_json(path, "item file")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"item file {path} must be a non-empty JSON object of item id -> metadata")
    try:
        items = {int(k): v for k, v in raw.items()}
    except ValueError as err:
        raise ValueError(f"item file {path}: keys must be integer item ids: {err}") from err
    if sorted(items) != list(range(len(items))):
        raise ValueError(f"item file {path}: item ids must be exactly 0..{len(items) - 1}")
    for i, meta in items.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("title"), str):
            raise ValueError(f"item file {path}: item {i} has no title")
    return dict(sorted(items.items()))


def data_quality(items: Mapping[int, dict], splits: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Counts of questionable rows a researcher should know about: per split, exact duplicate rows
    (same user, history and target), rows with an empty history, rows with a blank user id; and
    items with an empty title. :func:`genrec.data.prepare.prepare_data` saves them in
    ``data_stats.json``, warns about each non-zero count and refuses duplicate test rows.

    >>> df = pd.DataFrame({"user_id": ["a", "a", " "], "history_item_id": ["[1]", "[1]", "[]"], "item_id": [2, 2, 3]})
    >>> data_quality({0: {"title": ""}}, {"test": df})
    {'test_duplicate_rows': 1, 'test_empty_histories': 1, 'test_blank_users': 1, 'empty_titles': 1}
    """
    out: dict[str, int] = {}
    for name, df in splits.items():
        history = [str(h).replace(" ", "") for h in df["history_item_id"]]
        keys = list(zip(df["user_id"], history, df["item_id"]))
        out[f"{name}_duplicate_rows"] = len(keys) - len(set(keys))
        out[f"{name}_empty_histories"] = history.count("[]")
        out[f"{name}_blank_users"] = int(sum(not str(u).strip() for u in df["user_id"]))
    out["empty_titles"] = sum(not str(m.get("title", "")).strip() for m in items.values())
    return out


def write_dataset(
    out_dir: str | os.PathLike[str],
    items: Mapping[int, Mapping[str, str]],
    splits: Mapping[str, pd.DataFrame],
    sids: Mapping[int, str] | None = None,
    extra: Mapping[str, object] | None = None,
) -> None:
    """Write a complete dataset directory atomically.

    Args:
        out_dir: the directory to create (replaced if it exists).
        items: item id (``0..N-1``) to metadata with :data:`ITEM_FIELDS`.
        splits: ``train``/``valid``/``test`` frames with :data:`COLUMNS`.
        sids: item id to SID string for ``info.txt``; ``None`` leaves it empty.
        extra: more JSON files to write, name to content (e.g. ``data_stats.json``).

    Raises:
        ValueError: a split is empty or ids are not contiguous.
    """
    if sorted(items) != list(range(len(items))):
        raise ValueError("item ids must be exactly 0..N-1")
    for name in SPLITS:
        if name not in splits or splits[name].empty:
            raise ValueError(f"dataset has an empty {name} split: too little data for an 8:1:1 split")
    with atomic_path(out_dir, is_dir=True) as tmp:
        for name in SPLITS:
            splits[name][COLUMNS].to_csv(tmp / f"{name}.csv", index=False)
        write_json(tmp / "item.json", {str(i): {f: items[i].get(f, "") for f in ITEM_FIELDS} for i in items})
        lines = [f"{sids[i] if sids else ''}\t{items[i]['title']}\t{i}" for i in items]
        (tmp / "info.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for name, obj in (extra or {}).items():
            write_json(tmp / name, obj)
    log.info("wrote dataset to %s: %s", out_dir, {n: len(splits[n]) for n in SPLITS})
