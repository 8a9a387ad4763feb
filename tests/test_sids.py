import json

import numpy as np
import pytest

from genrec.settings import SIDSettings
from genrec.sid import build_sids, load_embeddings, residual_kmeans, resolve_collisions
from genrec.sids import check_index, codes_to_index, format_sid, load_index, parse_sid, vocabulary


def _clustered(n=200, d=16, seed=0, duplicates=10):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, d)) * 4
    x = centers[rng.integers(0, 5, n)] + rng.normal(size=(n, d)) * 0.3
    x[-duplicates:] = x[0]  # identical embeddings must still get distinct SIDs
    return x


def test_parse_and_format_roundtrip():
    assert format_sid(parse_sid("<a_1><b_22><c_3>")) == "<a_1><b_22><c_3>"
    with pytest.raises(ValueError):
        parse_sid("<a_1>junk")
    assert vocabulary({0: ["<a_2>", "<b_10>"], 1: ["<a_10>", "<b_2>"]}) == ["<a_2>", "<a_10>", "<b_2>", "<b_10>"]


@pytest.mark.parametrize("k", [6, 8])  # 6**3 = 216 codes for 200 items: a tight fit
def test_rkmeans_unique_fixed_length(k):
    x = _clustered()
    s = SIDSettings(codebook_size=k, levels=3, n_init=1, kmeans_iters=20)
    codes, cents = residual_kmeans(x, s)
    unique, moved = resolve_collisions(x, codes, cents)
    assert moved > 0  # the duplicated rows collided
    assert len({tuple(r) for r in unique.tolist()}) == len(x)
    assert unique.shape == (len(x), 3) and unique.max() < k
    index = codes_to_index(unique)
    check_index(index, len(x))
    assert {len(v) for v in index.values()} == {3}
    # items that did not collide keep their code
    groups = {}
    for i, row in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(row, []).append(i)
    singles = [g[0] for g in groups.values() if len(g) == 1]
    assert (unique[singles] == codes[singles]).all()


def test_deterministic():
    x = _clustered()
    s = SIDSettings(codebook_size=8, n_init=1, kmeans_iters=20, seed=3)
    a = resolve_collisions(x, *residual_kmeans(x, s))[0]
    b = resolve_collisions(x, *residual_kmeans(x, s))[0]
    assert (a == b).all()


def test_codebook_too_small():
    x = _clustered(n=100)
    s = SIDSettings(codebook_size=4, levels=3, n_init=1)  # 64 codes < 100 items
    with pytest.raises(ValueError, match="cannot get unique SIDs"):
        resolve_collisions(x, *residual_kmeans(x, s))


def test_bad_embeddings(tmp_path):
    p = tmp_path / "e.npy"
    np.save(p, np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="one row per item"):
        load_embeddings(p, 5)
    bad = np.zeros((3, 4), dtype=np.float32)
    bad[1, 2] = np.nan
    np.save(p, bad)
    with pytest.raises(ValueError, match=r"rows \[1\] contain NaN"):
        load_embeddings(p, 3)


def test_index_collision_and_ids_rejected(tmp_path):
    p = tmp_path / "i.json"
    p.write_text(json.dumps({"0": ["<a_1>", "<b_1>"], "1": ["<a_1>", "<b_1>"]}))
    with pytest.raises(ValueError, match="share the SID"):
        load_index(p)
    p.write_text(json.dumps({"0": ["<a_1>"], "2": ["<a_2>"]}))
    with pytest.raises(ValueError, match="exactly 0..1"):
        load_index(p)


def test_build_sids_writes_everything(tmp_path, synthetic_data_dir):
    from genrec.data.format import read_items, read_split

    items = read_items(synthetic_data_dir / "item.json")
    emb = tmp_path / "e.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(len(items), 8)).astype(np.float32))
    out = tmp_path / "sid"
    build_sids(
        SIDSettings(codebook_size=8, n_init=1),
        emb,
        synthetic_data_dir,
        out / "x.index.json",
        out / "sid_stats.json",
        out / "dataset",
    )
    index = load_index(out / "x.index.json", n_items=len(items))
    stats = json.loads((out / "sid_stats.json").read_text())
    assert stats["collision_rate_after"] == 0.0 and stats["items"] == len(items)
    test = read_split(out / "dataset" / "test.csv")
    assert all(sid == format_sid(index[i]) for sid, i in zip(test["item_sid"], test["item_id"]))
    info = (out / "dataset" / "info.txt").read_text().splitlines()
    assert info[0].split("\t") == [format_sid(index[0]), items[0]["title"], "0"]
