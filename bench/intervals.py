"""Row vs user bootstrap intervals side by side, on the result files of a finished run.

    .venv/bin/python bench/intervals.py --workdir DIR                 # a run of the default job
    .venv/bin/python bench/intervals.py --workdir DIR --name intervals_heldout

For every LLM cell and baseline of DIR/results: the 95% interval of HR@10 and NDCG@10 with test rows
resampled as if independent and with users resampled (all of a user's rows together), and the same
for each paired comparison of comparisons.csv (cell vs SFT parent, cell vs best baseline). Reports
each width and the ratio user/row. Writes bench/results/NAME.json (intervals.json by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import pandas as pd

from genrec.metrics import bootstrap_cis, paired_bootstrap, per_row, row_ranks

REPO = Path(__file__).resolve().parents[1]
METRICS = ("HR@10", "NDCG@10")


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="a directory holding a finished run's results/")
    ap.add_argument("--name", default="intervals", help="result name: bench/results/NAME.json")
    return ap


def _rows(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    rows = json.loads(path.read_text())
    ranks = row_ranks(rows)
    return [str(r["user_id"]) for r in rows], {m: per_row(ranks, m) for m in METRICS}


def _width(ci: list[float]) -> float:
    return ci[1] - ci[0]


def main() -> None:
    args = parser().parse_args()
    results = Path(args.workdir) / "results"
    out: dict = {
        "benchmark": "intervals",
        "workdir": str(Path(args.workdir).resolve()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "n_boot": 2000,
        "models": [],
        "comparisons": [],
    }
    files = {p.relative_to(results).parent.as_posix(): p for p in sorted(results.rglob("eval_results.json"))}
    for name, path in files.items():
        users, values = _rows(path)
        by_row, by_user = bootstrap_cis(values), bootstrap_cis(values, groups=users)
        entry = {"model": name, "rows": len(users), "users": len(set(users))}
        for m in METRICS:
            entry[m] = sum(values[m]) / len(values[m])
            entry[f"{m}_ci_row"], entry[f"{m}_ci_user"] = by_row[m], by_user[m]
            entry[f"{m}_width_ratio_user_vs_row"] = _width(by_user[m]) / _width(by_row[m])
        out["models"].append(entry)
    comparisons = results / "comparisons.csv"
    if comparisons.is_file():
        table = pd.read_csv(comparisons)
        for _, c in table.drop_duplicates(["dataset", "cell", "reference"]).iterrows():
            mine = next(p for n, p in files.items() if n.startswith(f"{c['dataset']}/runs/") and _cell(n) == c["cell"])
            theirs = next(
                p
                for n, p in files.items()
                if n.startswith(f"{c['dataset']}/")
                and (n.endswith(f"baselines/{c['reference']}") or _cell(n) == c["reference"])
            )
            (users, a), (_, b) = _rows(mine), _rows(theirs)
            n = min(len(users), len(b["HR@10"]))
            entry = {"dataset": c["dataset"], "cell": c["cell"], "reference": c["reference"], "rows": n}
            for m in METRICS:
                row = paired_bootstrap(a[m][:n], b[m][:n])
                user = paired_bootstrap(a[m][:n], b[m][:n], groups=users[:n])
                entry[m] = {"row": row, "user": user, "width_ratio_user_vs_row": _width(
                    [user["ci_low"], user["ci_high"]]) / _width([row["ci_low"], row["ci_high"]])}  # fmt: skip
            out["comparisons"].append(entry)
    dest = REPO / "bench" / "results" / f"{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    for e in out["models"]:
        ratios = f"{e['HR@10_width_ratio_user_vs_row']:.2f} / {e['NDCG@10_width_ratio_user_vs_row']:.2f}"
        print(f"{e['model']:55s} rows {e['rows']:5d} users {e['users']:5d}  width user/row HR@10 / NDCG@10 {ratios}")  # noqa: T201
    for e in out["comparisons"]:
        hr = e["HR@10"]
        row, user = hr["row"], hr["user"]
        print(  # noqa: T201
            f"{e['cell']} - {e['reference']}: HR@10 {user['diff']:+.4f}"
            f" row [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] p {row['p_value']:.3f}"
            f" user [{user['ci_low']:+.4f}, {user['ci_high']:+.4f}] p {user['p_value']:.3f}"
            f" width ratio {hr['width_ratio_user_vs_row']:.2f}"
        )


def _cell(name: str) -> str:
    """``runs/{encoder}-{sid}/sft-{f}/rl-{r}`` -> ``{encoder}-{sid}-{f}-{r}`` (the cell names of comparisons.csv)."""
    parts = name.split("/")
    if len(parts) < 5 or parts[1] != "runs":
        return ""
    return f"{parts[2]}-{parts[3].removeprefix('sft-')}-{parts[4].removeprefix('rl-')}"


if __name__ == "__main__":
    main()
