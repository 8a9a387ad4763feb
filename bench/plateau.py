"""SASRec and GRU4Rec selected with patience counted from epoch 1 (before) and from leaving the popularity
plateau (after), side by side in one training run, against most-popular and the published figures.

    .venv/bin/python bench/plateau.py --config config/plateau.yaml --dataset plateau --name plateau_synthetic
    .venv/bin/python bench/plateau.py --config config/office.yaml --dataset office --name plateau_office

For each sequential baseline of the config's ``baselines`` section, one run trains with the rule of
:class:`genrec.baselines.seqrec.Selection` as configured (``patience_from: popularity``) while an
``on_epoch`` hook replays the old rule (``patience_from: start``) on the same epochs and keeps the
weights it would have selected. The rule only decides when to stop, so the two are the same run until
the old rule stops (tests/test_seqrec.py checks it). Both models are then scored on every test row
(HR@10 / NDCG@10 with user-level 95% intervals) beside most-popular, each with its paired difference
from most-popular. Writes bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = {"office": {"sasrec": {"HR@10": 0.1120, "NDCG@10": 0.0858}}}  # MiniOneRec's README table
METRICS = ("HR@10", "NDCG@10")


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="config file, relative to the repository")
    ap.add_argument("--dataset", required=True, help="a dataset of the config")
    ap.add_argument("--kinds", nargs="*", default=None, help="sequential baselines to run (default: the config's)")
    ap.add_argument("--name", required=True, help="result name: bench/results/NAME.json")
    ap.add_argument("--threads", type=int, default=2)
    return ap


def main() -> None:
    import torch

    from genrec.baselines.popularity import popularity
    from genrec.baselines.seqrec import Selection, save_scorer, score_baseline, train
    from genrec.config import load_config
    from genrec.data.format import dataset_files, read_items, read_split
    from genrec.data.prepare import prepare_data
    from genrec.metrics import paired_bootstrap, per_row, row_ranks
    from genrec.settings import SEQREC_KINDS, PopularitySettings, SeqRecSettings, dataset_settings

    args = parser().parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(REPO)  # config paths are relative to the repository
    config = load_config(args.config)
    baselines = config.get("baselines") or {}
    kinds = args.kinds or [k for k in baselines if k in SEQREC_KINDS]
    work = Path(tempfile.mkdtemp(prefix="genrec-plateau-"))
    files = dataset_files(work / "data")
    prepare_data(dataset_settings(config["datasets"][args.dataset], f"datasets.{args.dataset}"), **files)
    n = len(read_items(files["item_json"]))
    train_df, valid_df = read_split(files["train_csv"], n_items=n), read_split(files["valid_csv"], n_items=n)

    def score(name: str, scorer: str | None = None) -> tuple[dict, list]:
        d = work / name
        paths = {"results_json": str(d / "eval_results.json"), "metrics_json": str(d / "metrics.json")}
        if scorer is None:
            top_k = (baselines.get("popularity") or {}).get("top_k", 20)
            settings = PopularitySettings(top_k=top_k)
            m = popularity(settings, files["train_csv"], files["test_csv"], files["item_json"], **paths)
        else:
            m = score_baseline(scorer, files["test_csv"], files["item_json"], **paths, threads=args.threads)
        return m, json.loads(Path(paths["results_json"]).read_text())

    popular, popular_rows = score("popularity")
    users = [str(r["user_id"]) for r in popular_rows]
    popular_values = {m: per_row(row_ranks(popular_rows), m) for m in METRICS}

    def figures(m: dict, rows: list) -> dict:
        mine = {k: per_row(row_ranks(rows), k) for k in METRICS}
        return {
            **{k: m[k] for k in METRICS},
            "ci95": {k: m["ci95"][k] for k in METRICS},
            "minus_popularity": {k: paired_bootstrap(mine[k], popular_values[k], groups=users) for k in METRICS},
        }

    out: dict = {
        "benchmark": "plateau",
        "config": args.config,
        "dataset": args.dataset,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "device": "cpu",
        "threads": args.threads,
        "train_rows": len(train_df),
        "test_rows": len(popular_rows),
        "test_users": len(set(users)),
        "ci_unit": "user",
        "popularity": {k: popular[k] for k in METRICS} | {"ci95": {k: popular["ci95"][k] for k in METRICS}},
        "published": PUBLISHED.get(args.dataset, {}),
        "kinds": {},
    }
    for kind in kinds:
        settings = SeqRecSettings.from_dict(dict(baselines.get(kind) or {}), f"baselines.{kind}")
        old = Selection(settings.patience, floor=None)
        kept: dict = {}

        def replay_old_rule(epoch: int, model, ndcg: float, old=old, kept=kept) -> None:
            if not old.stopped:
                if old.update(epoch, ndcg):
                    kept["state"] = copy.deepcopy(model.state_dict())
                kept["epochs"] = epoch

        model, log = train(kind, settings, train_df, valid_df, n, on_epoch=replay_old_rule)
        curve = log.pop("curve")
        save_scorer(model, kind, settings, n, str(work / kind / "after" / "scorer"), {**log, "curve": curve})
        before_model = copy.deepcopy(model)
        before_model.load_state_dict(kept["state"])
        before_log = {"epochs": kept["epochs"], "best_epoch": old.best_epoch, "valid_ndcg@20": old.best}
        old_settings = dataclasses.replace(settings, patience_from="start")
        before_dir = str(work / kind / "before" / "scorer")
        save_scorer(before_model, kind, old_settings, n, before_dir, {**before_log, "curve": curve[: kept["epochs"]]})
        entry = {"settings": settings.to_dict(), "popularity_valid_ndcg@20": log["popularity_valid_ndcg@20"]}
        for when, train_log in (("before", before_log), ("after", log)):
            m, rows = score(f"{kind}/{when}", str(work / kind / when / "scorer"))
            entry[when] = {"train": train_log, **figures(m, rows)}
        entry["valid_curve"] = [round(c["valid_ndcg@20"], 5) for c in curve]
        out["kinds"][kind] = entry
        print(kind, {w: {k: round(entry[w][k], 4) for k in METRICS} | entry[w]["train"] for w in ("before", "after")})  # noqa: T201
    dest = REPO / "bench" / "results" / f"{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")  # noqa: T201


if __name__ == "__main__":
    main()
