"""Dry-run time of large experiment matrices: how long Snakemake takes to plan before any job runs.

Builds matrices of N cells on the default config (SID methods x SFT variants x RL variants on the
synthetic dataset, each variant a copy of the default one with another seed) and times
``snakemake -n results/summary.csv`` on each, in one run, median of --repeats:

    .venv/bin/python bench/dry_run.py                      # 100 and 400 cells
    .venv/bin/python bench/dry_run.py --cells 100 400 1600

Writes bench/results/NAME.json (the time per size, and speedup_* style ratios between sizes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHAPES = {100: (5, 5, 4), 400: (5, 10, 8), 1600: (10, 10, 16)}  # SID methods x SFT variants x RL variants


def matrix_config(cells: int) -> dict:
    """The default config with ``cells`` cells: copies of its SID, SFT and RL variants under new names."""
    sids, sfts, rls = SHAPES[cells]
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    base = {k: next(iter(config[k].values())) for k in ("sid_methods", "sft_variants")}
    grpo = config["rl_variants"]["grpo"]
    config["sid_methods"] = {f"s{i}": {**base["sid_methods"], "seed": i} for i in range(sids)}
    config["sft_variants"] = {f"f{i}": {**base["sft_variants"], "seed": i} for i in range(sfts)}
    config["rl_variants"] = {"none": {"method": "none"}}
    config["rl_variants"].update({f"r{i}": {**copy.deepcopy(grpo), "seed": i} for i in range(rls - 1)})
    config["experiments"] = [
        {
            "datasets": ["synthetic"],
            "encoders": ["minilm"],
            "sid_methods": sorted(config["sid_methods"]),
            "sft_variants": sorted(config["sft_variants"]),
            "rl_variants": sorted(config["rl_variants"]),
        }
    ]
    return config


def time_dry_run(workdir: Path) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "results/summary.csv"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, "-n", "--quiet", "rules"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    jobs = sum(int(line.split()[-1]) for line in done.stdout.splitlines() if line.strip().startswith("total"))
    return elapsed, jobs


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[100, 400], choices=sorted(SHAPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="dry_run")
    return ap


def main() -> None:
    args = parser().parse_args()
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cpus", "device": "cpu", "repeats": args.repeats}
    sizes = {}
    for cells in args.cells:
        work = Path(tempfile.mkdtemp(prefix=f"genrec-dry{cells}-"))
        (work / "config.yaml").write_text(yaml.safe_dump(matrix_config(cells)))
        runs = [time_dry_run(work) for _ in range(args.repeats)]
        sizes[cells] = {"seconds": statistics.median(t for t, _ in runs), "jobs": runs[0][1]}
        print(f"{cells} cells, {runs[0][1]} jobs: {sizes[cells]['seconds']:.2f} s (median of {args.repeats})")
        shutil.rmtree(work)
    out["sizes"] = sizes
    first = min(sizes)
    for cells in sizes:
        if cells != first:  # how much longer than the smallest matrix: below cells/first means sub-linear planning
            out[f"ratio_{cells}_vs_{first}_cells"] = sizes[cells]["seconds"] / sizes[first]["seconds"]
    path = REPO / "bench" / "results" / f"{args.name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
