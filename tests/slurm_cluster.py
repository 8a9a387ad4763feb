"""A real single-host SLURM cluster for tests: munged, slurmctld and slurmd in a temporary directory.

The node advertises two fake ``gpu:a100`` GRES (plain files, ``AutoDetect=off``), so that jobs asking
for ``--gpus=a100:N`` are scheduled; there is no accounting database (the profile's squeue status
check must work without one). ``/etc/slurm/slurm.conf`` points at the temporary config while the
cluster runs (``srun`` inside jobs reads it) and is restored afterwards; the daemons are stopped by
the process ids started here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "srun")
ETC_CONF = Path("/etc/slurm/slurm.conf")


@dataclass(frozen=True)
class Cluster:
    conf: Path
    node: str
    cpus: int
    mem_mb: int

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}


def unavailable() -> str | None:
    """Why a local cluster cannot start here (``None`` when it can)."""
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        return f"slurm-wlm is not installed ({', '.join(missing)} missing; apt-get install slurmctld slurmd munge)"
    if os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged here needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


@contextlib.contextmanager
def local_cluster(root: Path, gpus: int = 2) -> Iterator[Cluster]:
    """Start the cluster under ``root``; stop it and restore ``/etc/slurm/slurm.conf`` on exit."""
    node = socket.gethostname()
    cpus, mem = os.cpu_count() or 1, int(_mem_mb() * 0.7)
    for d in ("state", "spool", "log", "munge", "gpu"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(gpus):
        (root / "gpu" / f"gpu{i}").touch()
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=genrectest
SlurmctldHost={node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
NodeName={node} CPUs={cpus} RealMemory={mem} Gres=gpu:a100:{gpus} State=UNKNOWN
PartitionName=cpu Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={node} MaxTime=INFINITE State=UP
"""
    )
    (root / "gres.conf").write_text(
        f"AutoDetect=off\nNodeName={node} Name=gpu Type=a100 File={root / 'gpu'}/gpu[0-{gpus - 1}]\n"
    )
    backup = root / "etc-slurm.conf.orig"
    had_conf = ETC_CONF.exists() or ETC_CONF.is_symlink()
    procs: list[subprocess.Popen] = []
    log = open(root / "log" / "daemons.log", "ab")  # noqa: SIM115 - closed in the finally block
    try:
        if had_conf:
            shutil.move(ETC_CONF, backup)
        ETC_CONF.parent.mkdir(parents=True, exist_ok=True)
        ETC_CONF.symlink_to(conf)
        munge = [
            "munged",
            "-F",
            "-f",
            f"--key-file={key}",
            f"--socket={sock}",
            f"--seed-file={root / 'munge' / 'seed'}",
        ]
        munge.append(f"--pid-file={root / 'munge' / 'munged.pid'}")
        procs.append(subprocess.Popen(munge, stdout=log, stderr=log))
        _wait(lambda: sock.exists(), "munged to open its socket", root)
        env = {**os.environ, "SLURM_CONF": str(conf)}
        for daemon in ("slurmctld", "slurmd"):
            procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], stdout=log, stderr=log, env=env))
        cluster = Cluster(conf, node, cpus, mem)

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
            return out.returncode == 0 and out.stdout.split() and all(s == "idle" for s in out.stdout.split())

        _wait(idle, "the node to be idle", root)
        yield cluster
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if ETC_CONF.is_symlink() and ETC_CONF.resolve() == conf.resolve():
            ETC_CONF.unlink()
        if had_conf:
            shutil.move(backup, ETC_CONF)
        log.close()


def _wait(ready, what: str, root: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return
        time.sleep(0.5)
    logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in (root / "log").glob("*.log"))
    raise RuntimeError(f"timed out waiting for {what}{logs}")


def jobs(cluster: Cluster) -> list[dict[str, str]]:
    """Every job slurmctld still knows (finished ones for MinJobAge seconds), as ``scontrol show job -o`` fields."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o"], capture_output=True, text=True, env=cluster.env, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        if line.strip() and not line.startswith("No jobs"):
            fields = dict(kv.split("=", 1) for kv in line.split(" ") if "=" in kv)
            rows.append(fields)
    return rows
