"""Wall time and result of a whole workflow run, and each LLM cell's gain over popularity with 95% CIs
(paired bootstrap over users, each with all of their rows).

    .venv/bin/python bench/default_job.py            # the README's default job, in a new directory under /tmp
    .venv/bin/python bench/default_job.py --workdir .  # the same in ./ (reuses what ./results already has)
    .venv/bin/python bench/default_job.py --config config/sid_compare.yaml --name sid_compare
    .venv/bin/python bench/default_job.py --workdir DIR --config config/sft_modes.yaml --name sft_modes --forcerun sft
    .venv/bin/python bench/default_job.py --workdir DIR --config config/rl_rewards.yaml --name rl_rewards

Writes bench/results/NAME.json (default_job.json by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from genrec.metrics import paired_bootstrap, per_row, row_ranks

REPO = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None, help="working directory (default: a new temporary one)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--config", default="config.yaml", help="config file, relative to the repository")
    ap.add_argument("--name", default="default_job", help="result name: bench/results/NAME.json")
    ap.add_argument("--forcerun", nargs="*", default=[], help="rules to run again even if up to date (e.g. sft)")
    ap.add_argument("--analyse-only", action="store_true", help="do not run Snakemake; re-read the results of a run")
    return ap


def main() -> None:
    args = parser().parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="genrec-default-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "config.yaml").exists():
        (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text())
    config = str((REPO / args.config).resolve())
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        str(args.cores),
        "results/summary.csv",
        "--configfile",
        config,
    ]
    if args.forcerun:
        cmd += ["--forcerun", *args.forcerun]
    dest = REPO / "bench" / "results" / f"{args.name}.json"
    if args.analyse_only:  # recompute the comparisons of an earlier run; keep its wall time
        wall = json.loads(dest.read_text())["wall_time_s"] if dest.is_file() else None  # None: run elsewhere
    else:
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    out = {
        "benchmark": "default_job",
        "ci_unit": "user",
        "wall_time_s": wall,
        "cores": args.cores,
        "device": "cpu",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "config": args.config,
        "cells": [],
    }
    first_ranks = None
    for _, row in summary[summary["kind"] == "llm"].iterrows():
        run = (
            workdir
            / "results"
            / row["dataset"]
            / "runs"
            / f"{row['encoder']}-{row['sid']}"
            / f"sft-{row['sft']}"
            / f"rl-{row['rl']}"
        )
        pop = workdir / "results" / row["dataset"] / "baselines" / "popularity"
        llm_rows = json.loads((run / "eval_results.json").read_text())
        llm_ranks, users = row_ranks(llm_rows), [str(r["user_id"]) for r in llm_rows]
        first_ranks = first_ranks if out["cells"] else llm_ranks
        pop_ranks = row_ranks(json.loads((pop / "eval_results.json").read_text()))
        pop_ranks = pop_ranks[: len(llm_ranks)]  # eval.max_users: the same leading test rows
        cell = {
            "cell": f"{row['dataset']}/{row['encoder']}-{row['sid']}/sft-{row['sft']}/rl-{row['rl']}",
            "n": len(llm_ranks),
        }
        train = json.loads((run.parent / "train_log.json").read_text())
        cell["sft"] = {
            k: train.get(k)
            for k in (
                "mode",
                "train_time_s",
                "peak_memory_gb",
                "weights_memory_gb",
                "trainable_params",
                "total_params",
                "tokens_per_s",
                "samples_per_s",
                "steps",
                "stopped_early",
                "valid_loss",
                "task_samples",
            )
        }
        policy = json.loads((run / "policy.json").read_text())
        cell["rl"] = {"method": policy["method"], "train_time_s": policy.get("train_time_s", 0.0)}
        if (run / "rl_log.json").is_file():  # GRPO: throughput and the last step's rewards
            rl_log = json.loads((run / "rl_log.json").read_text())
            keys = ("optimizer_steps", "train_prompts", "rollout_prompts_per_s", "update_prompts_per_s")
            cell["rl"].update({k: rl_log.get(k) for k in keys}, settings=policy["settings"])
        cell["eval_users_per_s"] = json.loads((run / "metrics.json").read_text()).get("users_per_s")
        for metric in ("HR@10", "NDCG@10", "HR@20", "MRR"):
            a, b = per_row(llm_ranks, metric), per_row(pop_ranks, metric)
            cell[metric] = sum(a) / len(a)
            cell[f"popularity_{metric}"] = sum(b) / len(b)
            cell[f"gain_{metric}"] = paired_bootstrap(a, b, groups=users)  # users resampled with all their rows
            if out["cells"]:  # against the first LLM cell of the matrix, on the same test rows
                cell[f"vs_first_cell_{metric}"] = paired_bootstrap(a, per_row(first_ranks, metric), groups=users)
        out["cells"].append(cell)
    full = [c for c in out["cells"] if c["sft"]["mode"] == "full"]
    if full and len(out["cells"]) > 1:  # training speed of each mode relative to full fine-tuning
        for c in out["cells"]:
            c["speedup_sft_train_vs_full"] = full[0]["sft"]["train_time_s"] / c["sft"]["train_time_s"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
