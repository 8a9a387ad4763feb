"""Raw Amazon Reviews 2018 files to MiniOneRec's format, as MiniOneRec does it, defects fixed.

MiniOneRec's ``data/amazon18_data_process.py``: title filter, time window, iterative k-core,
window widening when too few items survive, then the global chronological split of
:mod:`genrec.data.sequences`. Fixed here (``../shared/reference/minionerec.md`` §8, 18):
``category`` is read from the 2018 key (not ``categories``), descriptions are clean strings
(not a Python list repr with CSS), ``item_k`` is applied, the window is in UTC.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

import pandas as pd

from genrec.data.sequences import Interaction, SplitResult, chronological_split, kcore_filter, reindex_items
from genrec.data.sequences import split_frames
from genrec.settings import AmazonSettings

log = logging.getLogger(__name__)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def read_json_lines(path: str | os.PathLike[str]) -> Iterator[dict]:
    """Records of a ``.json`` or ``.json.gz`` JSON-lines file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not a JSON object (the message names file and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Amazon file not found: {path}")
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n} is not valid JSON: {err}") from err
            if not isinstance(rec, dict):
                raise ValueError(f"{path} line {n} is not a JSON object")
            yield rec


def clean_text(text: object) -> str:
    """HTML-unescape, strip tags, collapse whitespace.

    >>> clean_text("Blue &amp; <b>red</b>\\n pens")
    'Blue & red pens'
    """
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(str(text or "")))).strip()


def clean_title(raw: object) -> str | None:
    """MiniOneRec's title filter; None when the item is dropped.

    >>> clean_title('&quot;Stapler&quot; '), clean_title("x"), clean_title("<span id=1>a b</span>")
    ('Stapler', None, None)
    """
    if not isinstance(raw, str) or not raw or "<span id" in raw:
        return None
    title = raw.replace("&quot;", '"').replace("&amp;", "&").strip(' "')
    title = clean_text(title)
    if len(title) <= 1 or len(title.split(" ")) > 20:
        return None
    return title


def clean_item(raw: dict) -> dict[str, str] | None:
    """Item metadata as stored in ``item.json``, or None if the title filter drops the item."""
    title = clean_title(raw.get("title"))
    if title is None:
        return None
    desc = raw.get("description") or []
    if isinstance(desc, str):
        desc = [desc]
    cats = raw.get("category") or raw.get("categories") or []
    if cats and isinstance(cats[0], list):  # 2014 files nest category paths
        cats = cats[0]
    return {
        "title": title,
        "description": " ".join(t for t in (clean_text(d) for d in desc) if t),
        "brand": clean_text(raw.get("brand")),
        "categories": ", ".join(t for t in (clean_text(c) for c in cats) if t),
    }


def month_start_utc(yyyy_mm: str) -> int:
    """Unix seconds of UTC midnight on day 1 of ``YYYY-MM``.

    >>> month_start_utc("2018-11")
    1541030400
    """
    try:
        year, month = (int(x) for x in yyyy_mm.split("-"))
        return int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp())
    except (ValueError, TypeError) as err:
        raise ValueError(f"bad month {yyyy_mm!r}: expected YYYY-MM") from err


def preprocess_amazon(
    reviews: Iterable[dict], meta: Iterable[dict], s: AmazonSettings
) -> tuple[dict[int, dict], SplitResult, dict]:
    """Filter and split review records.

    Args:
        reviews: review records (``reviewerID``, ``asin``, ``unixReviewTime``, ...).
        meta: metadata records (``asin``, ``title``, ``description``, ``brand``, ``category``).
        s: thresholds and window.

    Returns:
        ``(items, split, stats)``: items keyed ``0..N-1``, the split, counts at every step.

    Raises:
        ValueError: a filtering step leaves nothing (the message names the step).
    """
    items_meta: dict[str, dict[str, str]] = {}
    n_meta = 0
    for rec in meta:
        n_meta += 1
        item = clean_item(rec)
        if item is not None and rec.get("asin"):
            items_meta[rec["asin"]] = item
    stats: dict[str, object] = {"meta_records": n_meta, "items_with_valid_title": len(items_meta)}
    all_reviews, skipped = [], 0
    for rec in reviews:
        try:
            all_reviews.append(Interaction(str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"])))
        except (KeyError, TypeError, ValueError):
            skipped += 1
    stats.update(reviews_read=len(all_reviews) + skipped, reviews_skipped=skipped)
    titled = [x for x in all_reviews if x.item in items_meta]
    stats["after_title_filter"] = len(titled)
    if not titled:
        raise ValueError("no review is left after the title filter: do reviews and metadata share asins?")
    start_year, start_month = (int(x) for x in s.start.split("-"))
    end = month_start_utc(s.end)
    while True:
        start = month_start_utc(f"{start_year}-{start_month:02d}")
        windowed = [x for x in titled if start <= x.timestamp <= end]
        kept = kcore_filter(windowed, s.user_k, s.item_k)
        n_items = len({x.item for x in kept})
        if s.min_items and n_items < s.min_items and start_year > 1996:
            log.info("%d items < min_items %d: widening the window start to %d", n_items, s.min_items, start_year - 1)
            start_year -= 1
            continue
        break
    stats.update(window=f"{start_year}-{start_month:02d}..{s.end}", after_window=len(windowed),
                 after_kcore=len(kept))
    if not windowed:
        raise ValueError(f"no review falls in the window {s.start}..{s.end}")
    if not kept:
        raise ValueError(f"no review survives the {s.user_k}/{s.item_k}-core filter; lower user_k/item_k")
    split = chronological_split(kept, max_history=s.max_history)
    items = reindex_items(split.item_ids, items_meta)
    stats.update(users=len(split.user_ids), items=len(items),
                 samples={"train": len(split.train), "valid": len(split.valid), "test": len(split.test)})
    log.info("amazon: %s", stats)
    return items, split, stats


def prepare_amazon(s: AmazonSettings) -> tuple[dict[int, dict], dict[str, pd.DataFrame], dict]:
    """Read the two raw files named in ``s`` and build the dataset.

    Returns:
        ``(items, splits, stats)`` with MiniOneRec-format frames (SID columns empty).
    """
    items, split, stats = preprocess_amazon(read_json_lines(s.reviews), read_json_lines(s.meta), s)
    return items, split_frames(split, items), stats
