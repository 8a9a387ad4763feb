import pandas as pd

from genrec.report.plots import FIGURES, method_labels, plot_all
from genrec.report.summary import METRIC_COLUMNS


def _row(dataset, kind, fraction, hr, **names):
    row = {"dataset": dataset, "kind": kind, "train_fraction": fraction, "sid_level_a_entropy_bits": 2.5}
    row.update({"encoder": "e", "sid": "s", "sft": "f", "rl": "none", "baseline": ""} | names)
    row.update({c: hr / 2 for c in METRIC_COLUMNS} | {"HR@10": hr, "NDCG@10": hr / 2, "n": 100})
    for m in ("HR@10", "NDCG@10"):
        row[f"{m}_ci_low"], row[f"{m}_ci_high"] = row[m] - 0.05, row[m] + 0.05
    return row


def test_every_figure_is_drawn_for_a_full_matrix_and_a_minimal_one(tmp_path):
    full = pd.DataFrame(
        [
            _row("syn25", "llm", 0.25, 0.3),
            _row("syn100", "llm", 1.0, 0.45),
            _row("syn100", "llm", 1.0, 0.5, rl="grpo"),
            _row("syn100", "llm", 1.0, 0.4, sid="balanced"),
            _row("syn25", "baseline", 0.25, 0.2, baseline="sasrec", below_popularity=True),
            _row("syn100", "baseline", 1.0, 0.35, baseline="sasrec", below_popularity=False),
        ]
    )
    comparisons = pd.DataFrame(
        [
            {"dataset": "syn100", "cell": "e-s-f-grpo", "reference_kind": "sft_parent", "reference": "e-s-f-none",
             "metric": m, "diff": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.01, "n": 100}
            for m in ("HR@10", "NDCG@10")
        ]
    )  # fmt: skip
    minimal = full.iloc[[1, 5]]
    for name, summary, comp in (("full", full, comparisons), ("minimal", minimal, comparisons.iloc[:0])):
        summary.to_csv(tmp_path / f"{name}_summary.csv", index=False)
        comp.to_csv(tmp_path / f"{name}_comparisons.csv", index=False)
        paths = plot_all(
            str(tmp_path / f"{name}_summary.csv"),
            str(tmp_path / f"{name}_comparisons.csv"),
            {f: str(tmp_path / name / f"{f}.png") for f in FIGURES},
        )
        assert [p.rsplit("/", 1)[1] for p in paths] == [f"{f}.png" for f in FIGURES]
        for p in paths:
            with open(p, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    labels, flagged = method_labels(pd.read_csv(tmp_path / "full_summary.csv"))
    assert flagged == [False, False, False, False, True, False] and labels[4] == "sasrec\n(below most-popular)"
    assert method_labels(minimal.drop(columns="below_popularity"))[1] == [
        False,
        False,
    ]  # summaries from before the flag
    sizes = {f: (tmp_path / "full" / f"{f}.png").stat().st_size for f in FIGURES}
    assert all(size > 5000 for size in sizes.values())
