import json

import pandas as pd
import pytest

from genrec.report.summary import below_popularity, compare, summarize


def _results(path, items, hits):
    """An eval_results.json of 20-item lists: row r ranks item items[r] first when hits[r], else not at
    all; rows come two per user."""
    others = [1000 + j for j in range(20)]
    rows = [
        {"user_id": f"u{i // 2}", "item_id": i, "predict_items": [i, *others[:19]] if h else others}
        for i, h in zip(items, hits)
    ]
    path.write_text(json.dumps(rows))
    return str(path)


def test_compare_pairs_cells_with_their_sft_parent_and_the_best_baseline(tmp_path):
    items = list(range(200))
    cell = {"dataset": "d", "encoder": "e", "sid": "s", "sft": "f"}
    sft = {**cell, "rl": "none", "results": _results(tmp_path / "a.json", items, [r % 2 == 0 for r in items])}
    rl = {**cell, "rl": "grpo", "results": _results(tmp_path / "b.json", items, [r % 4 != 3 for r in items])}
    weak = {"dataset": "d", "baseline": "popularity", "results": _results(tmp_path / "p.json", items, [False] * 200)}
    strong = {
        "dataset": "d",
        "baseline": "sasrec",
        "results": _results(tmp_path / "q.json", items, [r < 60 for r in items]),
    }
    table = compare([sft, rl], [weak, strong], str(tmp_path / "comparisons.csv"))
    assert table.equals(pd.read_csv(tmp_path / "comparisons.csv"))
    assert set(table["reference"]) == {"sasrec", "e-s-f-none"}  # the best baseline only
    rl_vs_sft = table[(table["cell"] == "e-s-f-grpo") & (table["reference_kind"] == "sft_parent")]
    hr = rl_vs_sft[rl_vs_sft["metric"] == "HR@10"].iloc[0]
    assert hr["diff"] == pytest.approx(0.75 - 0.5) and hr["ci_low"] > 0 and hr["p_value"] < 0.01
    assert len(table[table["cell"] == "e-s-f-none"]) == 2  # no parent for an SFT-only cell: baseline rows only
    assert (table["ci_unit"] == "user").all() and (table["users"] == 100).all()
    assert (table["family_size"] == len(table)).all() and (table["cells_compared"] == 2).all()
    assert (table["p_holm"] >= table["p_value"]).all() and (table["p_holm"] <= 1).all()
    by_row = compare([sft, rl], [weak, strong], str(tmp_path / "rows.csv"), bootstrap="row")
    assert (by_row["ci_unit"] == "row").all() and (by_row["diff"] == table["diff"]).all()
    first_half = {**sft, "results": _results(tmp_path / "h.json", items[:100], [r % 2 == 0 for r in items[:100]])}
    half = compare([first_half], [weak, strong], str(tmp_path / "half.csv"))  # eval.max_users = 100
    assert (half["n"] == 100).all() and half.iloc[0]["diff"] == pytest.approx(0.5 - 0.6)
    bad = {**strong, "results": _results(tmp_path / "r.json", items[::-1], [True] * 200)}
    with pytest.raises(ValueError, match="same test rows"):
        compare([sft], [bad], str(tmp_path / "x.csv"))
    assert not (tmp_path / "x.csv").exists()


def test_learned_models_below_most_popular_are_flagged(tmp_path, caplog):
    """A model below most-popular beyond the interval of the paired difference is flagged in summary.csv and
    warned about; one above, or level within the interval, is not; comparisons.csv says when the best
    baseline is most-popular."""
    items = list(range(400))

    def baseline(name, hits):
        metrics = tmp_path / f"{name}.metrics.json"
        metrics.write_text("{}")
        return {
            "dataset": "d",
            "baseline": name,
            "metrics": str(metrics),
            "results": _results(tmp_path / f"{name}.json", items, hits),
        }

    popular = baseline("popularity", [r % 2 == 0 for r in items])  # HR@10 0.5
    broken = baseline("sasrec", [r % 10 == 0 for r in items])  # 0.1: stopped on the plateau
    good = baseline("gru4rec", [r % 10 < 8 for r in items])  # 0.8
    level = baseline("sasrec_minionerec", [r % 2 == 0 or r == 1 for r in items])  # 0.5025
    cell = {"dataset": "d", "encoder": "e", "sid": "s", "sft": "f", "rl": "none"}
    bad_cell = {**cell, "results": _results(tmp_path / "c.json", items, [False] * 400)}
    flags = below_popularity([bad_cell], [popular, broken, good, level])
    assert flags == {id(bad_cell): True, id(broken): True, id(good): False, id(level): False}
    table = summarize([], [popular, broken, good, level], str(tmp_path / "summary.csv"))
    assert table["below_popularity"].tolist() == [None, True, False, False]
    assert "sasrec scores below most-popular" in caplog.text and "gru4rec scores below" not in caplog.text
    assert below_popularity([bad_cell], [good]) == {}  # no most-popular baseline: nothing to check against
    comparisons = compare([bad_cell], [popular, broken], str(tmp_path / "comparisons.csv"))
    assert comparisons["reference_is_popularity"].all() and "the best baseline is most-popular" in caplog.text
    assert not compare([bad_cell], [popular, good], str(tmp_path / "c2.csv"))["reference_is_popularity"].any()
