import ast
import gzip
import json

import pandas as pd

from genrec.data.format import COLUMNS, read_items, read_split
from genrec.data.importer import derive_train, import_minionerec
from genrec.data.sequences import Interaction, chronological_split
from genrec.data.synthetic import generate_amazon_records
from genrec.settings import ImportSettings, SyntheticSettings


def test_global_split_never_leaks_test_into_train():
    its = [Interaction(f"u{u}", f"i{(u * 7 + k) % 13}", 1000 * k + u) for u in range(30) for k in range(6)]
    res = chronological_split(its, max_history=3)
    assert max(res.target_times["train"]) <= min(res.target_times["test"])
    assert max(res.target_times["valid"]) <= min(res.target_times["test"])
    assert all(len(s.history) <= 3 for s in res.train + res.valid + res.test)
    n = len(res.train) + len(res.valid) + len(res.test)
    assert len(res.train) == int(0.8 * n) and len(res.valid) == int(0.9 * n) - int(0.8 * n)


def test_synthetic_is_deterministic_and_has_structure():
    s = SyntheticSettings(n_users=50, n_items=30, n_categories=3)
    a, b = generate_amazon_records(s), generate_amazon_records(s)
    assert a == b
    reviews, meta = a
    assert {"reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary"} <= set(reviews[0])
    assert {"asin", "title", "description", "brand", "category"} <= set(meta[0])
    assert isinstance(meta[0]["description"], list) and meta[0]["category"][0] == "Office Products"
    assert generate_amazon_records(SyntheticSettings(n_users=50, n_items=30, n_categories=3, seed=1)) != a


def test_synthetic_users_have_tastes(synthetic_data_dir):
    """The next item shares its category with the previous one far more often than chance."""
    items = read_items(synthetic_data_dir / "item.json")
    train = read_split(synthetic_data_dir / "train.csv")
    cat = {i: m["categories"].split(", ")[1] for i, m in items.items()}
    same = (train["history"].str[-1].map(cat) == train["item_id"].map(cat)).mean()
    n_cats = len(set(cat.values()))
    assert same > 2.0 / n_cats


def test_prepared_dataset_format(synthetic_data_dir):
    for split in ("train", "valid", "test"):
        df = pd.read_csv(synthetic_data_dir / f"{split}.csv")
        assert list(df.columns) == COLUMNS
        hist = ast.literal_eval(df["history_item_id"][0])
        titles = ast.literal_eval(df["history_item_title"][0])
        assert len(hist) == len(titles) >= 1
    items = read_items(synthetic_data_dir / "item.json")
    assert set(items[0]) == {"title", "description", "brand", "categories"}
    info = (synthetic_data_dir / "info.txt").read_text().splitlines()
    assert len(info) == len(items)


def test_derive_train_uses_only_first_heldout_history():
    valid = pd.DataFrame({"user_id": ["A1", "A1"], "history": [[1, 2, 3], [1, 2, 3, 9]]})
    test = pd.DataFrame({"user_id": ["A1", "A2"], "history": [[1, 2, 3, 9, 8], [5, 6]]})
    samples = derive_train(valid, test, max_history=10)
    assert [(s.user, s.history, s.target) for s in samples] == [
        ("A1", (1,), 2),
        ("A1", (1, 2), 3),
        ("A2", (5,), 6),
    ]  # 9 (a valid target) and 8 never appear


def test_import_without_train_has_no_heldout_target(office_dir):
    items, splits, stats = import_minionerec(ImportSettings(path=str(office_dir)))
    assert stats["train_derived"] and len(items) == 3459
    train = splits["train"]
    held = pd.concat([splits["valid"], splits["test"]])
    # every derived training event precedes the user's first held-out target: the training sequence
    # (history + target) is a prefix of that user's first held-out history
    first = held.drop_duplicates("user_id").set_index("user_id")["history"]
    for user, hist, target in zip(train["user_id"], train["history"], train["item_id"]):
        seq = first[user]
        k = seq.index(target, len(hist)) if target in seq[len(hist) :] else -1
        assert k == len(hist) and seq[k - len(hist) : k] == hist


def test_gz_reviews_roundtrip_through_amazon_pipeline(tmp_path):
    from genrec.data.amazon import prepare_amazon
    from genrec.settings import AmazonSettings

    reviews, meta = generate_amazon_records(SyntheticSettings(n_users=60, n_items=30, n_categories=3))
    for name, recs in (("Office.json.gz", reviews), ("meta_Office.json.gz", meta)):
        with gzip.open(tmp_path / name, "wt") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in recs)
    items, splits, stats = prepare_amazon(
        AmazonSettings(reviews=str(tmp_path / "Office.json.gz"), meta=str(tmp_path / "meta_Office.json.gz"), item_k=3)
    )
    assert len(splits["train"]) > len(splits["test"]) > 0 and len(items) <= 30
