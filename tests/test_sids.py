import json

import numpy as np
import pytest
from tiny import dataset_inputs

from genrec.settings import SIDSettings
from genrec.sids.build import build_sids, load_embeddings, residual_kmeans, resolve_collisions
from genrec.sids.format import check_index, codes_to_index, format_sid, load_index, parse_sid, vocabulary


def _clustered(n=200, d=16, seed=0, duplicates=10):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, d)) * 4
    x = centers[rng.integers(0, 5, n)] + rng.normal(size=(n, d)) * 0.3
    if duplicates:
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
        **dataset_inputs(synthetic_data_dir),
        index_json=out / "x.index.json",
        stats_json=out / "sid_stats.json",
        dataset_dir=out / "dataset",
    )
    index = load_index(out / "x.index.json", n_items=len(items))
    stats = json.loads((out / "sid_stats.json").read_text())
    assert stats["collision_rate_after"] == 0.0 and stats["items"] == len(items)
    test = read_split(out / "dataset" / "test.csv")
    assert all(sid == format_sid(index[i]) for sid, i in zip(test["item_sid"], test["item_id"]))
    info = (out / "dataset" / "info.txt").read_text().splitlines()
    assert info[0].split("\t") == [format_sid(index[0]), items[0]["title"], "0"]


def test_balanced_codes_stay_within_bound():
    import math

    x = _clustered(n=203, duplicates=0)
    s = SIDSettings(method="rkmeans_balanced", codebook_size=8, n_init=1, kmeans_iters=20)
    codes, _ = residual_kmeans(x - x.mean(0), s, balanced=True)
    bound = math.ceil(len(x) / 8)
    for lv in range(3):
        counts = np.bincount(codes[:, lv], minlength=8)
        assert counts.max() <= bound and (counts > 0).all()
    plain, _ = residual_kmeans(x - x.mean(0), SIDSettings(codebook_size=8, n_init=1, kmeans_iters=20))
    assert np.bincount(plain[:, 0]).max() > bound  # clustered data: unbalanced k-means is uneven


def test_capacitated_assign_exact_case():
    from genrec.sids.build import capacitated_assign

    dist = np.array([[0.0, 5.0], [0.1, 5.0], [0.2, 0.3]])
    assert capacitated_assign(dist, cap=2).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="cannot hold"):
        capacitated_assign(dist, cap=1)


def test_dedup_level_only_when_needed():
    from genrec.sids.build import add_dedup_level

    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1]])
    out, extra = add_dedup_level(codes)
    assert extra == 3 and out[:, 2].tolist() == [0, 1, 0, 2]
    same, none = add_dedup_level(np.array([[0, 1], [1, 1]]))
    assert none == 0 and same.shape == (2, 2)


def test_quality_stats_on_a_hand_made_case():
    from genrec.sids.build import sid_stats

    before = np.array([[0, 0], [0, 0], [1, 0], [1, 1]])
    after = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    st = sid_stats(before, after, emb, n_moved=1, recon_error=0.5)
    assert st["collision_rate_before"] == 0.25 and st["collision_rate_after"] == 0.0
    assert st["levels"][0] == {"codes_used": 2, "max_code": 1, "entropy_bits": 1.0, "max_items_per_code": 2}
    assert st["items_per_prefix"][0] == {"depth": 1, "prefixes": 2, "max_items": 2, "mean_items": 2.0}
    coh = st["semantic_coherence"]
    assert coh["same_code_cosine"] > 0.95 > coh["random_cosine"]


@pytest.mark.parametrize("method", ["rkmeans", "rkmeans_balanced"])
@pytest.mark.parametrize("dedup", ["move", "level"])
def test_methods_give_unique_fixed_length_sids(tmp_path, synthetic_data_dir, method, dedup):
    from genrec.data.format import read_items

    n = len(read_items(synthetic_data_dir / "item.json"))
    emb = tmp_path / "e.npy"
    np.save(emb, _clustered(n=n, duplicates=5).astype(np.float32))
    out = tmp_path / "sid"
    s = SIDSettings(method=method, codebook_size=4, n_init=1, dedup=dedup)
    build_sids(s, emb, **dataset_inputs(synthetic_data_dir), **_outputs(out, "i.json", "s.json", "d", "p.png"))
    index = load_index(out / "i.json", n_items=n)
    assert len({len(v) for v in index.values()}) == 1
    stats = json.loads((out / "s.json").read_text())
    assert stats["collision_rate_after"] == 0.0 and stats["collision_rate_before"] > 0
    assert stats["sid_length"] == (3 if dedup == "move" else 4)
    assert (out / "p.png").stat().st_size > 1000
    build_sids(s, emb, **dataset_inputs(synthetic_data_dir), **_outputs(out, "i2.json", "s2.json", "d2"))
    assert (out / "i2.json").read_text() == (out / "i.json").read_text()  # deterministic


def test_rqvae_method_end_to_end(tmp_path, synthetic_data_dir):
    from genrec.data.format import read_items

    n = len(read_items(synthetic_data_dir / "item.json"))
    emb = tmp_path / "e.npy"
    np.save(emb, _clustered(n=n, duplicates=3).astype(np.float32))
    out = tmp_path / "sid"
    s = SIDSettings(method="rqvae", codebook_size=4, layers=[16], e_dim=8, epochs=20, batch_size=32)
    build_sids(s, emb, **dataset_inputs(synthetic_data_dir), **_outputs(out, "i.json", "s.json", "d", "p.png"))
    index = load_index(out / "i.json", n_items=n)
    assert {len(v) for v in index.values()} == {3}
    stats = json.loads((out / "s.json").read_text())
    assert stats["collision_rate_after"] == 0.0 and 0 < stats["reconstruction_error"] < 1.5
    assert len(stats["training_curve"]) == 20 and (out / "p.png").stat().st_size > 1000


def _outputs(out, index_json, stats_json, dataset_dir, plot_png=None):
    return {
        "index_json": out / index_json,
        "stats_json": out / stats_json,
        "dataset_dir": out / dataset_dir,
        "plot_png": plot_png and out / plot_png,
    }
