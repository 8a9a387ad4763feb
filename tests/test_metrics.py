import math

import numpy as np
import pytest

from genrec.metrics import beam_miss, bootstrap_cis, ranking_metrics, target_rank


def test_hand_computed_case():
    preds = [["x", "t1", "y"], ["t2", "x", "y"], ["x", "y", "z"], ["bad", "x", "t4"]]
    targets = ["t1", "t2", "t3", "t4"]
    valid = {"x", "y", "z", "t1", "t2", "t3", "t4"}
    m = ranking_metrics(preds, targets, valid, ks=(1, 3))
    # ranks: 1, 0, miss, 2
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["HR@3"] == pytest.approx(3 / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1 + 1 / math.log2(4)) / 4)
    assert m["MRR"] == pytest.approx((1 / 2 + 1 + 1 / 3) / 4)
    assert m["invalid_rate"] == pytest.approx(1 / 12)
    assert m["n"] == 4 and m["list_length"] == 3


def test_k_beyond_list_is_not_reported():
    m = ranking_metrics([["a", "b"]], ["b"], {"a", "b"}, ks=(1, 3))
    assert "HR@3" not in m and m["HR@1"] == 0.0


def test_ndcg_never_decreases_with_k():
    preds = [["a", "b", "c", "d", "e"], ["e", "d", "c", "b", "a"], ["c", "a", "b", "e", "d"]]
    m = ranking_metrics(preds, ["c", "a", "d"], set("abcde"), ks=(1, 3, 5))
    assert m["NDCG@1"] <= m["NDCG@3"] <= m["NDCG@5"] and m["HR@5"] == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="one prediction list per target"):
        ranking_metrics([["a"]], ["a", "b"], {"a"})
    assert target_rank([], "a") is None


def test_row_ranks_and_per_row_means_match_metrics():
    from genrec.metrics import per_row, row_ranks

    rows = [
        {"item_id": 3, "predict_items": [1, 3, 2]},
        {"item_id": 5, "predict_items": [1, 2, 4]},
        {"item_id": 1, "predict_items": [1, 2, 4]},
    ]
    ranks = row_ranks(rows)
    assert ranks == [1, None, 0]
    assert per_row(ranks, "HR@1") == [0.0, 0.0, 1.0]
    assert sum(per_row(ranks, "NDCG@3")) / 3 == pytest.approx((1 / math.log2(3) + 1) / 3)


def test_paired_bootstrap_interval_covers_known_difference():
    import numpy as np

    from genrec.metrics import paired_bootstrap

    rng = np.random.default_rng(1)
    a = (rng.random(4000) < 0.30).astype(float)
    b = (rng.random(4000) < 0.20).astype(float)
    out = paired_bootstrap(a, b, n_boot=1000)
    assert out["ci_low"] < 0.10 < out["ci_high"] and out["p_value"] < 0.01
    same = paired_bootstrap(a, a, n_boot=200)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0


def test_metrics_carry_bootstrap_intervals_around_each_mean():
    preds = [["a", "b", "c"], ["b", "a", "c"], ["c", "a", "b"], ["a", "c", "b"]] * 5
    targets = ["a", "a", "a", "b"] * 5
    m = ranking_metrics(preds, targets, {"a", "b", "c"}, ks=(1, 3))
    assert set(m["ci95"]) == {"HR@1", "NDCG@1", "HR@3", "NDCG@3", "MRR"}
    for name, (low, high) in m["ci95"].items():
        assert low <= m[name] <= high
    assert m["ci95"]["HR@3"] == [1.0, 1.0]  # every target is in every list of 3
    assert 0 < m["ci95"]["HR@1"][0] < m["HR@1"] < m["ci95"]["HR@1"][1] < 1
    assert ranking_metrics(preds, targets, {"a", "b", "c"}, ks=(1, 3)) == m  # seeded


def test_bootstrap_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    import numpy as np

    rng = np.random.default_rng(0)
    true_p, covered, trials = 0.3, 0, 200
    for t in range(trials):
        draws = (rng.random(400) < true_p).astype(float)
        low, high = bootstrap_cis({"HR@10": draws}, n_boot=1000, seed=t)["HR@10"]
        covered += low <= true_p <= high
    assert 0.90 <= covered / trials <= 0.99


def test_user_bootstrap_on_perfectly_correlated_rows_is_the_one_row_per_user_interval():
    import numpy as np

    from genrec.metrics import paired_bootstrap

    rng = np.random.default_rng(3)
    per_user = (rng.random(150) < 0.4).astype(float)  # one value per user
    copies = 6
    rows = np.repeat(per_user, copies)  # each user's 6 rows are identical: perfectly correlated
    users = np.repeat([f"u{i}" for i in range(150)], copies)
    one_row = bootstrap_cis({"HR@10": per_user})["HR@10"]
    by_user = bootstrap_cis({"HR@10": rows}, groups=users)["HR@10"]
    by_row = bootstrap_cis({"HR@10": rows})["HR@10"]
    assert by_user == pytest.approx(one_row, abs=1e-12)  # the same draws, the same interval
    assert (by_row[1] - by_row[0]) < 0.6 * (by_user[1] - by_user[0])  # rows as if independent: too narrow
    other = np.repeat((rng.random(150) < 0.3).astype(float), copies)
    paired_user = paired_bootstrap(rows, other, groups=users)
    paired_one = paired_bootstrap(per_user, other[::copies])
    assert paired_user == pytest.approx(paired_one, abs=1e-12)
    assert paired_bootstrap(rows, other)["p_value"] <= paired_user["p_value"]


def test_user_bootstrap_weights_users_by_their_rows():
    from genrec.metrics import bootstrap_means

    means = bootstrap_means([1.0, 1.0, 1.0, 0.0], n_boot=500, groups=["a", "a", "a", "b"])
    assert set(np.round(means, 6)) <= {0.0, 0.75, 1.0}  # a resample is {a,a}, {a,b} or {b,b}


def test_holm_controls_the_family():
    from genrec.metrics import holm

    assert holm([0.01, 0.04, 0.03, 0.5]) == [0.04, 0.09, 0.09, 0.5]
    assert holm([0.2]) == [0.2] and holm([]) == []
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_beam_miss_counts_exact_top_items_the_beam_lost():
    assert beam_miss([[1, 2, 3]], [[1, 2, 3]], k=3) == {"miss_rate": 0.0, "users_with_miss": 0.0}
    assert beam_miss([[1, 2, 3], [4, 5, 6]], [[3, 2, 1], [4, 7, 8]], k=3) == {
        "miss_rate": 2 / 6,
        "users_with_miss": 0.5,
    }


def test_text_metrics_match_hand_computed_cases_english_and_chinese():
    from sacrebleu.metrics import BLEU

    from genrec.metrics import text_metrics

    en = text_metrics(["The cat sat on the mat."], ["the cat sat on a mat"], n_boot=50)
    # unigrams: 5 of 6 shared each way; bigrams: the-cat, cat-sat, sat-on of 5; LCS: the cat sat on mat
    assert en["ROUGE-1"] == pytest.approx(100 * 5 / 6) and en["ROUGE-2"] == pytest.approx(100 * 3 / 5)
    assert en["ROUGE-L"] == pytest.approx(100 * 5 / 6)
    assert en["BLEU"] == pytest.approx(
        BLEU().corpus_score(["the cat sat on the mat"], [["the cat sat on a mat"]]).score
    )
    zh = text_metrics(["惠普墨盒黑色"], ["惠普黑色墨盒"], n_boot=50)  # one token per character
    # the same six characters; bigrams 惠普, 墨盒, 黑色 shared of 5; longest common subsequence 惠普墨盒 (4 of 6)
    assert zh["ROUGE-1"] == pytest.approx(100) and zh["ROUGE-2"] == pytest.approx(60)
    assert zh["ROUGE-L"] == pytest.approx(100 * 4 / 6)
    assert zh["BLEU"] == pytest.approx(BLEU(tokenize="zh").corpus_score(["惠普墨盒黑色"], [["惠普黑色墨盒"]]).score)
    same = text_metrics(
        ["一样的答案", "the same answer is given here"], ["一样的答案", "the same answer is given here"], n_boot=50
    )
    assert all(same[m] == pytest.approx(100) for m in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU"))
    assert same["ci95"]["BLEU"] == pytest.approx([100, 100])
    wrong = text_metrics(["nothing alike", ""], ["一样的答案", "the same answer is given here"], n_boot=50)
    assert wrong["ROUGE-1"] == 0 and wrong["BLEU"] == 0
    with pytest.raises(ValueError, match="as many predictions as references"):
        text_metrics(["a"], ["a", "b"])


def test_text_metric_intervals_resample_examples_and_bleu_is_the_corpus_score_of_the_resample():
    from genrec.metrics import text_metrics

    preds = ["a b c d e", "a b x y", "p q r s", "a b c", "z"] * 8
    refs = ["a b c d e", "a b c d", "p q r t", "a b c d", "y"] * 8
    m = text_metrics(preds, refs, n_boot=500)
    for metric, (low, high) in m["ci95"].items():
        assert low < m[metric] < high, metric
    assert m["n"] == 40 and len(m["per_example"]["ROUGE-1"]) == 40
