"""Raw Amazon 2018 preprocessing (genrec.data.amazon) on hand-made records."""

import calendar
import gzip
import json
import re
import time

import pytest

from genrec.data.amazon import (
    clean_item,
    clean_text,
    month_start_utc,
    prepare_amazon,
    preprocess_amazon,
    read_json_lines,
)
from genrec.data.format import COLUMNS
from genrec.settings import AmazonSettings

DAY = 86400
T0 = calendar.timegm((2015, 1, 1, 0, 0, 0))  # inside the default window


def meta(asin: str, title: object = None, **extra) -> dict:
    rec = {"asin": asin, "title": f"Item {asin}" if title is None else title}
    rec.update(extra)
    return rec


def review(user: str, asin: str, t: int) -> dict:
    return {"reviewerID": user, "asin": asin, "unixReviewTime": t, "overall": 5.0, "reviewText": "ok"}


def settings(**kw) -> AmazonSettings:
    return AmazonSettings(**{"reviews": "<mem>", "meta": "<mem>", "user_k": 2, "item_k": 1, **kw})


def write_gz(path, records) -> str:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    return str(path)


# --- text and items ---------------------------------------------------------------------------


def test_clean_text_unescapes_strips_tags_and_keeps_quotes():
    assert clean_text('  Blue &amp; <b>red</b>\n\t "pens" &quot;x&quot; ') == 'Blue & red "pens" "x"'
    assert clean_text("a < b and c > d") == "a < b and c > d"
    assert clean_text("<!-- .aplus { color: red } -->") == ""
    assert clean_text(None) == ""


@pytest.mark.parametrize(
    ("title", "kept"),
    [
        (None, None),  # key absent: see below
        ("", None),
        ("X", None),
        ('  "X"  ', None),  # one character once spaces and quotes are stripped
        ("&quot;Stapler&quot;", "Stapler"),
        ("Pens &amp; Pencils", "Pens & Pencils"),
        ('<span id="x">Nice pen</span>', None),
        (" ".join(["w"] * 20), " ".join(["w"] * 20)),
        (" ".join(["w"] * 21), None),
        ('Say "hi" pad', 'Say "hi" pad'),
    ],
)
def test_title_filter(title, kept):
    raw = {"asin": "A"} if title is None else {"asin": "A", "title": title}
    item = clean_item(raw)
    assert (item and item["title"]) == kept


def test_item_fields_are_clean_strings():
    raw = meta(
        "A",
        "Good pen",
        description=["Writes <b>well</b>.", "", " <!-- .css { margin: 0 } -->", "<div></div>", "Blue &amp; red."],
        brand="by\n    \n    Acme",
        category=["Office Products", "Pens", '<span class="x">junk</span>', "Pens"],
    )
    item = clean_item(raw)
    assert item == {
        "title": "Good pen",
        "description": "Writes well. Blue & red.",
        "brand": "Acme",
        "categories": "Office Products, Pens",
    }
    assert not item["description"].startswith("[")


def test_item_accepts_legacy_categories_and_string_description():
    item = clean_item(meta("A", "Good pen", description="One &lt;line&gt;", categories=[["Office", "Pens"]]))
    assert item["categories"] == "Office, Pens" and item["description"] == "One"
    assert clean_item(meta("A", "Good pen"))["categories"] == ""


def test_month_start_utc():
    assert month_start_utc("2018-11") == 1541030400 == calendar.timegm((2018, 11, 1, 0, 0, 0))
    assert month_start_utc("1996-10") == calendar.timegm((1996, 10, 1, 0, 0, 0))
    for bad in ("2018-13", "2018-1", "18-11", "2018/11", "", "2018-11-01"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            month_start_utc(bad)


# --- reading ----------------------------------------------------------------------------------


def test_read_json_lines_plain_and_gz(tmp_path):
    recs = [{"a": 1}, {"b": "é"}]
    gz = write_gz(tmp_path / "x.json.gz", recs)
    plain = tmp_path / "x.json"
    plain.write_text(json.dumps(recs[0]) + "\n\n" + json.dumps(recs[1]) + "\n", encoding="utf-8")
    assert list(read_json_lines(gz)) == recs == list(read_json_lines(plain))


def test_read_json_lines_errors_name_the_file(tmp_path):
    missing = tmp_path / "meta_Nothing.json.gz"
    with pytest.raises(FileNotFoundError, match="meta_Nothing.json.gz"):
        read_json_lines(missing)  # raised at call time, before iteration
    bad = tmp_path / "Office.json.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write('{"ok": 1}\n{"asin": "A", oops}\n')
    with pytest.raises(ValueError, match=r"Office\.json\.gz line 2"):
        list(read_json_lines(bad))
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"arr\.json line 1"):
        list(read_json_lines(arr))


# --- filtering --------------------------------------------------------------------------------


def test_reviews_without_metadata_or_title_or_fields_are_dropped():
    metas = [meta("A"), meta("B"), meta("C", "Z"), {"title": "no asin"}]  # C fails the title filter
    reviews = [
        review("u1", "A", T0),
        review("u1", "B", T0 + DAY),
        review("u1", "C", T0 + 2 * DAY),
        review("u1", "D", T0 + 3 * DAY),  # D has no metadata
        {"asin": "A", "unixReviewTime": T0},
        {"reviewerID": "u1", "asin": "A"},
        {"reviewerID": "u1", "asin": "A", "unixReviewTime": "soon"},
    ]
    items, split, stats = preprocess_amazon(reviews, metas, settings())
    assert stats["reviews_read"] == 7 and stats["reviews_skipped"] == 3
    assert stats["meta_records"] == 4 and stats["meta_skipped"] == 1 and stats["meta_items_kept"] == 2
    assert stats["after_title_filter"] == 2
    assert sorted(split.item_ids) == ["A", "B"]
    assert [items[i]["title"] for i in (0, 1)] == ["Item A", "Item B"]


def test_kcore_is_iterative():
    # Item C has one review, so it goes; then u3 keeps one review and goes; then B keeps two.
    metas = [meta(a) for a in "ABC"]
    reviews = [
        review("u1", "A", T0),
        review("u1", "B", T0 + DAY),
        review("u2", "A", T0 + 2 * DAY),
        review("u2", "B", T0 + 3 * DAY),
        review("u3", "B", T0 + 4 * DAY),
        review("u3", "C", T0 + 5 * DAY),
    ]
    items, split, stats = preprocess_amazon(reviews, metas, settings(user_k=2, item_k=2))
    assert sorted(split.user_ids) == ["u1", "u2"] and sorted(split.item_ids) == ["A", "B"]
    assert stats["after_kcore"] == 4 and stats["users"] == 2 and stats["items"] == 2


@pytest.fixture
def non_utc_tz(monkeypatch):
    """Run under a local time zone far from UTC, so a local-time window would be hours off."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_window_boundaries_are_inclusive_utc_month_starts(non_utc_tz):
    start, end = calendar.timegm((2015, 3, 1, 0, 0, 0)), calendar.timegm((2016, 3, 1, 0, 0, 0))
    times = [start - 1, start, start + DAY, end - DAY, end, end + 1]
    reviews = [review("u1", f"I{k}", t) for k, t in enumerate(times)]
    metas = [meta(f"I{k}") for k in range(len(times))]
    _, split, stats = preprocess_amazon(reviews, metas, settings(start="2015-03", end="2016-03"))
    assert sorted(split.item_ids) == ["I1", "I2", "I3", "I4"]
    assert stats["after_window"] == 4
    assert (stats["window_start"], stats["window_end"]) == ("2015-03", "2016-03")


def test_window_widens_by_a_year_while_too_few_items():
    metas = [meta(a) for a in "ABCD"]
    t17, t16 = month_start_utc("2017-06"), month_start_utc("2016-06")
    reviews = [
        review("u1", "A", t16),
        review("u1", "B", t16 + DAY),
        review("u2", "C", t17),
        review("u2", "D", t17 + DAY),
    ]
    s = settings(start="2017-03", end="2018-11")
    assert preprocess_amazon(reviews, metas, s)[2]["items"] == 2  # min_items = 0: no widening
    items, _, stats = preprocess_amazon(reviews, metas, settings(start="2017-03", end="2018-11", min_items=4))
    assert len(items) == 4 and stats["window_start"] == "2016-03" and stats["window_widened"] == 1
    # Never before 1996: 1997-10 widens once to 1996-10, then stops even though too few items survive.
    items, _, stats = preprocess_amazon(reviews, metas, settings(start="1997-10", min_items=100))
    assert stats["window_start"] == "1996-10" and stats["window_widened"] == 1 and len(items) == 4


def _many_reviews(n_users: int = 30) -> tuple[list[dict], list[dict]]:
    metas = [meta(f"I{i}") for i in range(12)]
    reviews = []
    for u in range(n_users):
        n = 3 + u % 9  # up to 11 reviews: longer than max_history below
        for k in range(n):
            t = T0 + ((u * 7 + k * 13) % 50 + k * 3) * DAY  # users interleave in time; ties happen
            reviews.append(review(f"U{u}", f"I{(u + k * 5) % 12}", t))
    return reviews, metas


def test_global_chronological_split_and_history_cap():
    reviews, metas = _many_reviews()
    items, split, stats = preprocess_amazon(reviews, metas, settings(max_history=4))
    n = len(split.train) + len(split.valid) + len(split.test)
    assert len(split.train) == int(0.8 * n) and len(split.train) + len(split.valid) == int(0.9 * n)
    tt = split.target_times
    assert max(tt["train"]) <= min(tt["valid"]) and max(tt["valid"]) <= min(tt["test"])
    assert max(tt["train"]) <= min(tt["test"])
    key = {
        name: {(s.user, s.target, t) for s, t in zip(getattr(split, name), tt[name], strict=True)}
        for name in ("train", "valid", "test")
    }
    assert not key["test"] & key["train"] and not key["valid"] & key["train"]
    every = split.train + split.valid + split.test
    assert max(len(s.history) for s in every) == 4 and min(len(s.history) for s in every) == 1
    assert sorted(items) == list(range(len(items))) == sorted(split.item_ids.values())
    assert stats["train_samples"] == len(split.train) and stats["test_samples"] == len(split.test)


@pytest.mark.parametrize(
    ("metas", "kw", "message"),
    [
        ([meta("A", "Z"), meta("B", '<span id="t">x</span>')], {}, "title filter"),
        ([meta("A"), meta("B")], {"start": "2016-01", "end": "2017-01"}, "time window 2016-01..2017-01"),
        ([meta("A"), meta("B")], {"user_k": 3}, "k-core"),
    ],
)
def test_empty_step_raises_naming_it(metas, kw, message):
    reviews = [review("u1", "A", T0), review("u1", "B", T0 + DAY)]
    with pytest.raises(ValueError, match=message):
        preprocess_amazon(reviews, metas, settings(**kw))


def test_no_usable_review_and_reversed_window():
    with pytest.raises(ValueError, match="no usable review"):
        preprocess_amazon([{"asin": "A"}], [meta("A")], settings())
    with pytest.raises(ValueError, match="after its end"):
        preprocess_amazon([], [], settings(start="2018-01", end="2017-01"))


# --- files end to end -------------------------------------------------------------------------


def test_prepare_amazon_from_gz_files(tmp_path):
    reviews, metas = _many_reviews()
    metas[0].update(description=["<p>Fine</p>", "<!-- css -->"], category=["Office Products", "Pens"])
    s = AmazonSettings(
        reviews=write_gz(tmp_path / "Office.json.gz", reviews),
        meta=write_gz(tmp_path / "meta_Office.json.gz", metas),
        user_k=2,
        item_k=1,
    )
    items, splits, stats = prepare_amazon(s)
    json.dumps(stats)  # JSON-ready for data_stats.json
    assert sorted(splits) == ["test", "train", "valid"]
    for frame in splits.values():
        assert list(frame.columns) == COLUMNS and len(frame) > 0
        assert (frame["history_item_sid"] == "[]").all() and (frame["item_sid"] == "").all()
    i0 = next(i for i, v in items.items() if v["title"] == "Item I0")
    assert items[i0]["description"] == "Fine" and items[i0]["categories"] == "Office Products, Pens"
    assert stats["reviews_read"] == len(reviews) and sum(len(f) for f in splits.values()) == (
        stats["train_samples"] + stats["valid_samples"] + stats["test_samples"]
    )


def test_prepare_amazon_missing_file(tmp_path):
    reviews = write_gz(tmp_path / "Office.json.gz", [])
    s = AmazonSettings(reviews=reviews, meta=str(tmp_path / "meta_Office.json"))
    with pytest.raises(FileNotFoundError, match="meta_Office.json"):
        prepare_amazon(s)
