"""Can every job of a run be scheduled? Each job's request against what the SLURM nodes offer.

SLURM keeps a job that no node can ever run PENDING, and Snakemake waits for it without a word.
``python -m genrec.cluster check SNAKEMAKE-ARGS...`` runs Snakemake's dry run with the same
arguments (profile, config, targets), reads each job's rule, threads and resources from it, reads
the nodes from ``sinfo``, and names every rule whose request no node of its partition can meet, and
the resource that falls short, before anything is submitted:

    .venv/bin/python -m genrec.cluster check --profile slurm results/summary.csv
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """What one job asks SLURM for (from the dry run)."""

    rule: str
    cpus: int
    mem_mb: int
    gpus: int
    gpu_model: str
    partition: str


@dataclass(frozen=True)
class Node:
    """What one node offers in one partition (from ``sinfo``)."""

    name: str
    partition: str
    default: bool
    cpus: int
    mem_mb: int
    gpus: dict[str, int]  # GPU model (or "" when the gres names none) -> count


SINFO_FORMAT = "%N|%P|%c|%m|%G"  # node, partition (* = default), CPUs, memory (MB), generic resources


def parse_dry_run(text: str) -> list[Request]:
    """The distinct requests in Snakemake's dry-run output (one block per job: rule, threads, resources).

    >>> out = '''rule sft:
    ...     output: a
    ...     threads: 8
    ...     resources: tmpdir=/tmp, mem_mb=64000, slurm_partition=gpu, gpu=2, gpu_model=a100
    ... rule summary:
    ...     resources: tmpdir=/tmp, mem_mb=8000
    ... '''
    >>> [(r.rule, r.cpus, r.mem_mb, r.gpus, r.gpu_model, r.partition) for r in parse_dry_run(out)]
    [('sft', 8, 64000, 2, 'a100', 'gpu'), ('summary', 1, 8000, 0, '', '')]
    """
    requests: dict[Request, None] = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:)", text, flags=re.M):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if not head:
            continue
        threads = re.search(r"^\s+threads: (\d+)", block, re.M)
        found = re.search(r"^\s+resources: (.*)$", block, re.M)
        res = dict(kv.split("=", 1) for kv in found.group(1).split(", ") if "=" in kv) if found else {}
        requests[
            Request(
                rule=head.group(1),
                cpus=int(threads.group(1)) if threads else 1,
                mem_mb=_int(res.get("mem_mb")),
                gpus=_int(res.get("gpu")),
                gpu_model=res.get("gpu_model", ""),
                partition=res.get("slurm_partition", ""),
            )
        ] = None
    return list(requests)


def _int(value: str | None) -> int:
    return int(float(value)) if value and re.fullmatch(r"[\d.]+", value) else 0


def parse_sinfo(text: str) -> list[Node]:
    """Nodes from ``sinfo -h -N -o '%N|%P|%c|%m|%G'``.

    >>> [n.gpus for n in parse_sinfo("n1|gpu|16|256000|gpu:a100:4(S:0-1)\\nn2|cpu*|64|512000|(null)")]
    [{'a100': 4}, {}]
    """
    nodes = []
    for line in text.strip().splitlines():
        name, partition, cpus, mem, gres = line.split("|")
        gpus: dict[str, int] = {}
        for item in gres.split(","):
            parts = re.sub(r"\(.*\)", "", item).split(":")
            if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
                model = parts[1] if len(parts) == 3 else ""
                gpus[model] = gpus.get(model, 0) + int(parts[-1])
        nodes.append(Node(name, partition.rstrip("*"), partition.endswith("*"), int(cpus.rstrip("+")), _int(mem), gpus))
    return nodes


def unschedulable(requests: Sequence[Request], nodes: Sequence[Node]) -> list[str]:
    """One line per request no node can meet: the rule, what it asks, and the resource that falls short.

    >>> nodes = parse_sinfo("n1|gpu|2|16000|gpu:a100:2\\nn1|cpu*|2|16000|gpu:a100:2")
    >>> problems = unschedulable([Request("sft", 8, 1000, 1, "a100", "gpu"), Request("x", 1, 1000, 0, "", "")], nodes)
    >>> [p.split(":")[0] for p in problems]
    ['rule sft asks for 8 CPUs in partition gpu; its nodes have at most 2 (n1)']
    """
    partitions = {n.partition for n in nodes}
    default = next((n.partition for n in nodes if n.default), "")
    problems = []
    for r in requests:
        partition = r.partition or default
        if partition not in partitions:
            problems.append(
                f"rule {r.rule} asks for partition {partition!r}, which sinfo does not list ({sorted(partitions)})"
            )
            continue
        candidates = [n for n in nodes if n.partition == partition]
        checks = [
            (
                "CPUs",
                r.cpus,
                lambda n: n.cpus,
                f"lower set-threads for {r.rule} (slurm/config.yaml caps it at GENREC_SLURM_MAX_CPUS)",
            ),
            (
                "MB of memory",
                r.mem_mb,
                lambda n: n.mem_mb,
                f"lower mem_mb of {r.rule} (slurm/config.yaml caps it at GENREC_SLURM_MAX_MEM_MB)",
            ),
            (
                f"{r.gpu_model or 'any'} GPUs",
                r.gpus,
                lambda n, m=r.gpu_model: _gpus(n, m),
                f"lower gpu of {r.rule} (GENREC_TRAIN_GPUS for sft and rl_grpo)",
            ),
        ]
        short = [
            f"rule {r.rule} asks for {asked} {what} in partition {partition}; its nodes have at most "
            f"{offered(best)} ({best.name}): {advice}"
            for what, asked, offered, advice in checks
            if asked and not any(offered(n) >= asked for n in candidates)
            for best in [max(candidates, key=offered)]
        ]
        problems += short
        if not short and not any(
            n.cpus >= r.cpus and n.mem_mb >= r.mem_mb and _gpus(n, r.gpu_model) >= r.gpus for n in candidates
        ):
            problems.append(
                f"rule {r.rule} asks for {r.cpus} CPUs, {r.mem_mb} MB and {r.gpus} GPUs together in "
                f"partition {partition}; no single node has all of them"
            )
    return problems


def _gpus(node: Node, model: str) -> int:
    return node.gpus.get(model, 0) if model else sum(node.gpus.values())


def check(snakemake_args: Sequence[str]) -> list[str]:
    """Dry-run Snakemake with ``snakemake_args`` and compare every job's request with ``sinfo``.

    Raises:
        RuntimeError: the dry run or ``sinfo`` failed.
    """
    # a dry run caps threads at --cores (default: one); on a cluster a job gets its rule's threads
    cores = [] if {"--cores", "-c", "--jobs", "-j"} & set(snakemake_args) else ["--cores", "100000"]
    dry = subprocess.run(
        [sys.executable, "-m", "snakemake", *snakemake_args, *cores, "--dry-run"], capture_output=True, text=True
    )
    if dry.returncode:
        raise RuntimeError(f"snakemake --dry-run failed:\n{dry.stdout[-2000:]}{dry.stderr[-3000:]}")
    try:
        sinfo = subprocess.run(["sinfo", "-h", "-N", "-o", SINFO_FORMAT], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(f"sinfo failed ({err}); run this on a host of the SLURM cluster") from err
    return unschedulable(parse_dry_run(dry.stdout + dry.stderr), parse_sinfo(sinfo.stdout))


class _SnakemakeArgs(argparse.ArgumentParser):
    """A parser that hands every argument it does not know on to Snakemake."""

    def parse_args(self, args=None, namespace=None):  # noqa: D102 - argparse's
        known, rest = self.parse_known_args(args, namespace)
        known.snakemake_args = rest
        return known


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m genrec.cluster``: ``check`` and then Snakemake's own arguments."""
    p = _SnakemakeArgs(description=__doc__.split("\n")[0], epilog="Example: check --profile slurm results/summary.csv")
    p.add_argument("command", choices=["check"], help="check: name the jobs no SLURM node can run")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    problems = check(args.snakemake_args)
    for line in problems:
        print(line, file=sys.stderr)  # noqa: T201 - the command's report
    if problems:
        sys.exit(f"{len(problems)} job request(s) no node can meet; nothing was submitted")
    print("every job's request fits a node of its partition")  # noqa: T201 - the command's report


if __name__ == "__main__":
    main()
