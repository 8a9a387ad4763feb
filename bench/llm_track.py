"""The general LLM track's default matrix (config/llm.yaml) run end to end, and its figures collected.

Runs the workflow's LLM targets in a work directory holding a copy of the repository's workflow
files (or only collects, with --collect-only, from a finished one), then writes
bench/results/NAME.json: every cell of results/llm/results_summary.csv (ROUGE-1/2/L and BLEU with
their 95% intervals, training time, peak memory, trainable parameters, inference speed), the
paired differences between methods at each data scale on the same test examples (examples
resampled), the continued-pretraining perplexities, the reward model's pairwise accuracy and the
wall time of the run.

    .venv/bin/python bench/llm_track.py --workdir /tmp/llm_track
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
TARGETS = (
    "results/llm/results_summary.csv",
    "results/llm/plots/data_scale_comparison.png",
    "results/llm/plots/method_comparison.png",
)
COPY = ("Snakefile", "config.yaml", "config", "rules", "workflow_scripts", "report", "envs")


def paired(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over the same examples, its 95% interval (examples resampled) and two-sided p."""
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    draws = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    low, high = np.percentile(draws, [2.5, 97.5])
    p = min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean()))
    return {"diff": float(d.mean()), "ci95": [float(low), float(high)], "p": float(p), "n": len(d)}


def method_differences(workdir: Path, table: pd.DataFrame, reference: str = "full") -> list[dict]:
    """Per data scale, every method against ``reference`` on per-example ROUGE-1/2/L (the same test examples)."""
    out = []
    for (data, model, scale), rows in table.groupby(["data", "model", "scale"]):
        answers = {}
        for method in rows["method"]:
            path = workdir / "results" / "llm" / data / "runs" / model / method / f"scale-{scale}" / "answers.json"
            answers[method] = json.loads(path.read_text())
        if reference not in answers:
            continue
        for method in sorted(set(answers) - {reference}):
            for metric in ("ROUGE-1", "ROUGE-2", "ROUGE-L"):
                a = [r[metric] for r in answers[method]]
                b = [r[metric] for r in answers[reference]]
                out.append({"data": data, "model": model, "scale": str(scale), "method": method,
                            "reference": reference, "metric": metric, **paired(a, b)})  # fmt: skip
    return out


def run(workdir: Path, cores: int) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src, dst = REPO / name, workdir / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy(src, dst)
    config = yaml.safe_load((REPO / "config" / "llm.yaml").read_text())
    rewards = [f"results/llm/reward/{r}/metrics.json" for r in config.get("reward_variants") or {}]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        str(cores),
        *TARGETS,
        *rewards,
        "--configfile",
        "config/llm.yaml",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--collect-only", action="store_true", help="read a finished run (its wall time unknown)")
    ap.add_argument("--wall-time-s", type=float, help="--collect-only: the finished run's measured wall time")
    ap.add_argument("--name", default="llm_track")
    args = ap.parse_args()
    wall = args.wall_time_s if args.collect_only else run(args.workdir, args.cores)
    res = args.workdir / "results"
    table = pd.read_csv(res / "llm" / "results_summary.csv", dtype={"scale": str})
    config = yaml.safe_load((args.workdir / "config" / "llm.yaml").read_text())
    out = {
        "benchmark": "llm_track",
        "device": f"cpu ({platform.machine()}, {os.cpu_count()} cpus)",
        "config": "config/llm.yaml",
        "wall_time_s": wall,
        "cells": table.to_dict(orient="records"),
        "method_differences": method_differences(args.workdir, table),
        "pretrain": {
            name: json.loads((res / "pretrain" / name / "metrics.json").read_text())
            for name in config.get("pretrain_variants") or {}
            if (res / "pretrain" / name / "metrics.json").is_file()
        },
        "reward": {
            name: json.loads((res / "llm" / "reward" / name / "metrics.json").read_text())
            for name in config.get("reward_variants") or {}
            if (res / "llm" / "reward" / name / "metrics.json").is_file()
        },
        "gpu": "not measured: no GPU was lent to this run",
    }
    # training speed of each method against full fine-tuning at the largest scale both ran (same examples)
    for _, rows in table.groupby(["data", "model"]):
        full = rows[rows["method"] == "full"]
        for method, mine in rows[rows["method"] != "full"].groupby("method"):
            both = sorted(set(mine["train_examples"]) & set(full["train_examples"]))
            if both:
                a = mine[mine["train_examples"] == both[-1]]["train_samples_per_s"].iloc[0]
                b = full[full["train_examples"] == both[-1]]["train_samples_per_s"].iloc[0]
                out[f"speedup_{method}_vs_full_train_samples_per_s"] = float(a / b)
    dest = REPO / "bench" / "results" / f"{args.name}.json"
    dest.write_text(json.dumps(out, indent=2, default=str) + "\n")
    cols = ["method", "train_examples", "ROUGE-1", "ROUGE-L", "BLEU", "train_time_s", "train_peak_memory_gb"]
    print(table[cols].to_string(index=False))


if __name__ == "__main__":
    main()
