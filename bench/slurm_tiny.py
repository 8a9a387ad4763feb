"""Wall time of the tiny matrix (tests/configs/tiny.yaml) locally and under a real SLURM scheduler, side by side.

Starts the single-host test cluster of tests/slurm_cluster.py (root and slurm-wlm needed), runs the
tiny matrix with `--cores 2` locally and then with the repository's profile (`--profile slurm`, sizes
capped to the node), both from scratch in new directories, and writes bench/results/NAME.json:

    .venv/bin/python bench/slurm_tiny.py
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

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test cluster and the tiny model live with the tests

import slurm_cluster  # noqa: E402
from tiny import make_tiny_model_dir  # noqa: E402


def run(workdir: Path, config: dict, *args: str, env: dict | None = None) -> float:
    workdir.mkdir(parents=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="slurm_tiny")
    return ap


def main() -> None:
    args = parser().parse_args()
    reason = slurm_cluster.unavailable()
    if reason:
        sys.exit(reason)
    root = Path(tempfile.mkdtemp(prefix="genrec-slurm-bench-"))
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["models"]["tiny"]["path"] = str(make_tiny_model_dir(root / "tiny"))
    local = run(root / "local", config)
    with slurm_cluster.local_cluster(root / "cluster") as cluster:
        env = {
            **cluster.env,
            "GENREC_SLURM_MAX_CPUS": str(cluster.cpus),
            "GENREC_SLURM_MAX_MEM_MB": str(cluster.mem_mb // 2),
        }
        flags = [
            "--profile",
            str(REPO / "slurm"),
            "--slurm-init-seconds-before-status-checks",
            "2",
            "--latency-wait",
            "5",
        ]
        slurm = run(root / "slurm", config, *flags, env=env)
        jobs = len([j for j in slurm_cluster.jobs(cluster) if j.get("WorkDir") == str((root / "slurm").resolve())])
    out = {
        "device": "cpu",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "local_wall_s": local,
        "slurm_wall_s": slurm,
        "slurm_jobs_submitted": jobs,
        "speedup_local_vs_slurm": slurm / local,
        "settings": {"config": "tests/configs/tiny.yaml", "cores": 2, "status_check_start_s": 2},
    }
    path = REPO / "bench" / "results" / f"{args.name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
