"""Raw Amazon Reviews 2018 files to MiniOneRec's format, as MiniOneRec does it, defects fixed.

Follows MiniOneRec's ``data/amazon18_data_process.py`` (``../shared/reference/minionerec.md`` §1):
title filter, time window ``start <= t <= end``, iterative k-core, widening of the window by a
year while too few items survive, then the global chronological 8:1:1 split of
:mod:`genrec.data.sequences`. Fixed here (§8, defect 18):

* ``categories`` is read from the 2018 key ``category`` (MiniOneRec reads ``categories``, so its
  field is always empty);
* ``description`` is a clean string of the metadata list's non-empty elements, not the Python
  repr of the list with CSS and HTML comments left in;
* text cleaning keeps double quotes;
* ``item_k`` is applied by the k-core filter (MiniOneRec parses it and ignores it);
* window boundaries are UTC midnights, not the machine's local time;
* the window actually used is recorded in the stats (MiniOneRec hard-codes a file tag).
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

from genrec.data.sequences import (
    Interaction,
    SplitResult,
    chronological_split,
    kcore_filter,
    reindex_items,
    split_frames,
)
from genrec.settings import AmazonSettings

log = logging.getLogger(__name__)

# HTML comments and style/script blocks go with their content: 2018 descriptions carry inline CSS.
_JUNK = re.compile(r"<!--.*?(?:-->|$)|<(style|script)\b[^>]*>.*?</\1\s*>", re.DOTALL | re.IGNORECASE)
# A tag starts with a letter, '/' or '!', so that text such as "a < b > c" survives. Block tags
# separate words; inline ones (<b>, <span>, ...) do not, so "<b>well</b>." stays "well.".
_BLOCK_TAG = re.compile(r"</?(?:br|p|div|li|ul|ol|dl|dt|dd|tr|td|th|table|h[1-6]|hr)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z!][^>]*>")
_SPACE = re.compile(r"\s+")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_BY_PREFIX = re.compile(r"^\s*by\s*\n")  # 2018 brands often read "by\n    \n    Acme"
_REVIEW_KEYS = ("reviewerID", "asin", "unixReviewTime")
_META_KEYS = ("title", "description", "brand", "category", "categories")
_OLDEST_YEAR = 1996  # MiniOneRec stops widening the window here (Amazon's first reviews)


def read_json_lines(path: str | os.PathLike[str]) -> Iterator[dict]:
    """Iterate over the records of a ``.json`` or ``.json.gz`` JSON-lines file.

    Amazon 2018 files hold one strict JSON object per line; blank lines are skipped. The file's
    existence is checked at call time, the lines are read lazily.

    Args:
        path: the file; a name ending in ``.gz`` is read through gzip.

    Returns:
        An iterator of the records, in file order.

    Raises:
        FileNotFoundError: the file does not exist (raised by this call, not on iteration).
        ValueError: on iteration, a line is not a JSON object, is not UTF-8, or the gzip stream
            is corrupt; the message names the file and the line number.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Amazon JSON-lines file not found: {path}")
    return _iter_json_lines(str(path))


def _iter_json_lines(path: str) -> Iterator[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    n = 0
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path} line {n} is not valid JSON: {err}") from err
                if not isinstance(rec, dict):
                    raise ValueError(f"{path} line {n} is a JSON {type(rec).__name__}, not an object")
                yield rec
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path} cannot be read after line {n}: {err}") from err


def clean_text(text: object) -> str:
    """HTML-unescape, remove tags (and comments, style and script blocks), collapse whitespace.

    Quotes are kept (MiniOneRec's embedding cleaner deletes every double quote).

    Args:
        text: a string; ``None`` gives ``""``, anything else is converted with ``str``.

    Returns:
        The cleaned single-line string.

    >>> clean_text('Blue &amp; <b>red</b>\\n "pens"<!-- .css { } -->')
    'Blue & red "pens"'
    """
    if text is None:
        return ""
    s = html.unescape(str(text))
    s = _TAG.sub("", _BLOCK_TAG.sub(" ", _JUNK.sub(" ", s)))
    return _SPACE.sub(" ", s).strip()


def _filtered_title(raw: object) -> str | None:
    """MiniOneRec's title filter: the cleaned title, or None when the item is dropped."""
    if not isinstance(raw, str) or "<span id" in raw:
        return None
    # Exactly MiniOneRec's normalisation and test, so that the same items are dropped.
    title = raw.replace("&quot;", '"').replace("&amp;", "&").strip(" ").strip('"')
    if len(title) <= 1 or len(title.split(" ")) > 20:
        return None
    return clean_text(title) or None  # e.g. a title made only of tags: nothing left to show


def _text_list(value: object) -> list[str]:
    """A metadata field that may be a string, a list or nested lists, as a flat list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _text_list(v)]
    return [str(value)]


def clean_item(raw: dict) -> dict[str, str] | None:
    """Item metadata as stored in ``item.json``, or None when MiniOneRec's title filter drops it.

    The title filter drops an item without a title or whose title contains ``<span id``;
    otherwise ``&quot;``/``&amp;`` are unescaped, spaces and double quotes stripped from the ends,
    and the title must then be longer than 1 character and have at most 20 space-separated words.
    A title that passes but is empty after :func:`clean_text` is dropped as well.

    Args:
        raw: one ``meta_{Category}.json`` record.

    Returns:
        ``{"title", "description", "brand", "categories"}``, all clean strings:
        ``description`` joins the list's non-empty cleaned elements with a space (CSS and HTML
        junk clean to nothing and are dropped); ``categories`` joins the 2018 ``category`` list
        (or a legacy ``categories`` list, flattened) with ``", "``, skipping duplicates and
        MiniOneRec's ``</span>`` entries.
    """
    title = _filtered_title(raw.get("title"))
    if title is None:
        return None
    description = " ".join(t for t in map(clean_text, _text_list(raw.get("description"))) if t)
    brand = raw.get("brand")
    brand = clean_text(_BY_PREFIX.sub("", brand) if isinstance(brand, str) else brand)
    cats: list[str] = []
    for c in _text_list(raw.get("category") or raw.get("categories")):
        c = "" if "</span>" in c else clean_text(c)
        if c and c not in cats:
            cats.append(c)
    return {"title": title, "description": description, "brand": brand, "categories": ", ".join(cats)}


def month_start_utc(yyyy_mm: str) -> int:
    """Unix seconds of UTC midnight on day 1 of the month ``YYYY-MM``.

    Args:
        yyyy_mm: e.g. ``"2018-11"``.

    Returns:
        The timestamp in seconds.

    Raises:
        ValueError: not a ``YYYY-MM`` string with a month from 01 to 12.

    >>> month_start_utc("2018-11")
    1541030400
    """
    m = _MONTH.fullmatch(yyyy_mm) if isinstance(yyyy_mm, str) else None
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"bad month {yyyy_mm!r}: expected YYYY-MM, e.g. '2018-11'")
    return int(datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=timezone.utc).timestamp())


def _read_meta(meta: Iterable[dict], stats: dict[str, object]) -> dict[str, dict]:
    """Raw metadata of the items passing the title filter, by asin (a later valid record wins)."""
    kept: dict[str, dict] = {}
    n = no_asin = 0
    for rec in meta:
        n += 1
        asin = rec.get("asin")
        if not isinstance(asin, str) or not asin:
            no_asin += 1
            continue
        if _filtered_title(rec.get("title")) is not None:
            # Cleaning waits until k-core is done: most items of a big category do not survive.
            kept[asin] = {k: rec[k] for k in _META_KEYS if k in rec}
    stats.update(meta_records=n, meta_skipped=no_asin, meta_items_kept=len(kept))
    log.info("metadata: %d records, %d without asin, %d items pass the title filter", n, no_asin, len(kept))
    return kept


def _read_reviews(reviews: Iterable[dict], stats: dict[str, object]) -> list[Interaction]:
    """Reviews as interactions, in input order; records lacking a needed field are counted and skipped."""
    out: list[Interaction] = []
    skipped = 0
    for rec in reviews:
        if any(rec.get(k) is None for k in _REVIEW_KEYS):
            skipped += 1
            continue
        try:
            out.append(Interaction(str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"])))
        except (TypeError, ValueError):
            skipped += 1
    stats.update(reviews_read=len(out) + skipped, reviews_skipped=skipped)
    log.info("reviews: %d read, %d skipped (missing reviewerID, asin or unixReviewTime)", len(out) + skipped, skipped)
    return out


def preprocess_amazon(
    reviews: Iterable[dict], meta: Iterable[dict], settings: AmazonSettings
) -> tuple[dict[int, dict], SplitResult, dict]:
    """Filter and split Amazon 2018 review records as MiniOneRec does.

    Steps: drop reviews lacking ``reviewerID``/``asin``/``unixReviewTime``; drop reviews of items
    whose metadata is missing or fails the title filter (:func:`clean_item`); keep reviews with
    ``start <= unixReviewTime <= end`` (UTC month starts); iterative k-core with ``user_k`` and
    ``item_k``. While ``min_items > 0``, fewer items survive and the start year is after 1996,
    the start moves back a year and the window and k-core are redone (MiniOneRec's rule). Then the
    global chronological split with histories capped at ``max_history``.

    Args:
        reviews: review records, in file order (consumed once, after ``meta``).
        meta: metadata records (``asin``, ``title``, ``description``, ``brand``, ``category``).
        settings: thresholds, window and history cap.

    Returns:
        ``(items, split, stats)``: cleaned metadata keyed by the contiguous ids ``0..N-1``, the
        split, and JSON-ready counts at every step with the window actually used
        (``window_start``, ``window_end``).

    Raises:
        ValueError: the window is malformed or reversed, or a step leaves no review (the
            message names the step).
    """
    s = settings
    end = month_start_utc(s.end)
    start = month_start_utc(s.start)
    if start > end:
        raise ValueError(f"amazon2018: window start {s.start} is after its end {s.end}")
    stats: dict[str, object] = {}
    titled_meta = _read_meta(meta, stats)
    interactions = _read_reviews(reviews, stats)
    if not interactions:
        raise ValueError(
            f"no usable review among {stats['reviews_read']} records: none has reviewerID, asin "
            "and an integer unixReviewTime"
        )
    titled = [x for x in interactions if x.item in titled_meta]
    del interactions
    stats["after_title_filter"] = len(titled)
    log.info("after the title filter (metadata present, title kept): %d reviews", len(titled))
    if not titled:
        raise ValueError(
            "no review is left after the title filter: no reviewed item has metadata with an "
            "acceptable title (do the reviews and metadata files belong to the same category?)"
        )

    year, month = int(s.start[:4]), s.start[5:]
    widened = 0
    while True:
        start = month_start_utc(f"{year}-{month}")
        windowed = [x for x in titled if start <= x.timestamp <= end]
        kept = kcore_filter(windowed, s.user_k, s.item_k)
        n_items = len({x.item for x in kept})
        log.info(
            "window %d-%s..%s: %d reviews; after the %d/%d-core: %d reviews, %d items",
            year,
            month,
            s.end,
            len(windowed),
            s.user_k,
            s.item_k,
            len(kept),
            n_items,
        )
        if s.min_items > 0 and n_items < s.min_items and year > _OLDEST_YEAR:
            log.info(
                "%d items < min_items %d: widening the window start to %d-%s", n_items, s.min_items, year - 1, month
            )
            year -= 1
            widened += 1
            continue
        break
    window = f"{year}-{month}..{s.end}"
    stats.update(
        window_start=f"{year}-{month}",
        window_end=s.end,
        window_widened=widened,
        after_window=len(windowed),
        after_kcore=len(kept),
    )
    if not windowed:
        raise ValueError(f"no review is left after the time window {window} (UTC)")
    if not kept:
        raise ValueError(
            f"no review is left after the k-core filter (user_k={s.user_k}, item_k={s.item_k}) "
            f"in the window {window}; lower user_k/item_k or widen the window"
        )

    split = chronological_split(kept, max_history=s.max_history)
    items = reindex_items(split.item_ids, {a: clean_item(titled_meta[a]) for a in split.item_ids})
    stats.update(
        users=len(split.user_ids),
        items=len(items),
        train_samples=len(split.train),
        valid_samples=len(split.valid),
        test_samples=len(split.test),
    )
    log.info(
        "amazon2018: %d users, %d items; samples train %d, valid %d, test %d",
        len(split.user_ids),
        len(items),
        len(split.train),
        len(split.valid),
        len(split.test),
    )
    return items, split, stats


def prepare_amazon(settings: AmazonSettings) -> tuple[dict[int, dict], dict[str, pd.DataFrame], dict]:
    """Read the raw files named in ``settings`` and build the dataset.

    Args:
        settings: ``reviews`` and ``meta`` paths (``.json`` or ``.json.gz``) plus the filters.

    Returns:
        ``(items, splits, stats)``: items keyed ``0..N-1``, the ``train``/``valid``/``test``
        MiniOneRec-format frames (SID columns empty), and the counts of :func:`preprocess_amazon`.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is malformed or a filtering step leaves nothing.
    """
    log.info("reading reviews %s and metadata %s", settings.reviews, settings.meta)
    reviews, meta = read_json_lines(settings.reviews), read_json_lines(settings.meta)
    items, split, stats = preprocess_amazon(reviews, meta, settings)
    return items, split_frames(split, items), stats
