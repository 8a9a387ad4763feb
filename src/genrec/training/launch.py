"""Running a training stage on one device in this process, or on several GPUs under ``accelerate launch``.

A stage function (``genrec.sft.run_sft``, ``genrec.rl.run.run_rl``) takes its settings and keyword
paths. :func:`run_stage` calls it directly when the rule has at most one GPU; with more it starts
``accelerate launch`` with DeepSpeed ZeRO-2 (the ``zero2_*`` files shipped beside this module, found
wherever the package is installed) on ``python -m <the stage's module>``, whose ``__main__`` block is
:func:`stage_main`: the same function, its arguments rebuilt from the command line.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import torch

from genrec.logs import log_to_file

log = logging.getLogger(__name__)

_HERE = resources.files("genrec.training")
ACCELERATE_CONFIG = Path(str(_HERE / "zero2_accelerate.yaml"))  # accelerate + DeepSpeed, one machine
DEEPSPEED_CONFIG = Path(str(_HERE / "zero2_deepspeed.json"))  # ZeRO-2, "auto" values from the Trainer


def launch_command(
    module: str,
    gpus: int,
    args: Sequence[str],
    accelerate_config: str | os.PathLike[str] = ACCELERATE_CONFIG,
    deepspeed_config: str | os.PathLike[str] | None = DEEPSPEED_CONFIG,
) -> list[str]:
    """The ``accelerate launch`` command line that runs ``python -m module ARGS`` on ``gpus`` processes."""
    ds = ["--deepspeed_config_file", str(deepspeed_config)] if deepspeed_config else []
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config),
        *ds,
        "--num_processes",
        str(gpus),
        "-m",
        module,
        *args,
    ]


def cli_args(settings, **kwargs: str | int | None) -> list[str]:
    """Command-line arguments of :func:`stage_main` for these settings and keyword arguments (``None`` left out)."""
    out = ["--settings", json.dumps(settings.to_dict(), sort_keys=True)]
    for key, value in kwargs.items():
        if value is not None:
            out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def run_stage(run: Callable[..., None], settings, gpus: int = 1, **kwargs) -> None:
    """Run ``run(settings, **kwargs)`` here, or under ``accelerate launch`` on ``gpus`` GPUs when ``gpus`` > 1.

    Raises:
        RuntimeError: fewer GPUs are visible than requested, DeepSpeed is missing, or the launched job failed.
    """
    if gpus <= 1:
        run(settings, **kwargs)
        return
    stage = run.__module__
    if torch.cuda.device_count() < gpus:
        raise RuntimeError(f"{stage} asks for {gpus} GPUs but {torch.cuda.device_count()} are visible")
    if importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError("multi-GPU training runs DeepSpeed ZeRO-2: install it with pip install -e '.[deepspeed]'")
    cmd = launch_command(stage, gpus, cli_args(settings, **kwargs))
    log.info("launching %s", " ".join(cmd))
    # the workers log to their stderr, which is this process's stderr: the rule's log file
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode:
        raise RuntimeError(f"multi-GPU {stage} failed with exit code {done.returncode}; see the log above")


def is_main_process() -> bool:
    """Whether this is the only process, or rank 0 of the ones ``accelerate launch`` started."""
    return int(os.environ.get("RANK", 0)) == 0


def stage_main(run: Callable[..., None], settings_cls: type, argv: Sequence[str] | None = None) -> None:
    """Command line of a stage function: ``--settings JSON`` and one ``--name`` per keyword argument of ``run``.

    This is what :func:`run_stage` launches on every process; ``--log FILE`` appends rank 0's logging to FILE.
    """
    p = argparse.ArgumentParser(description=(run.__doc__ or run.__name__).split("\n")[0])
    p.add_argument("--settings", required=True, help=f"the stage's settings as JSON ({settings_cls.__name__})")
    p.add_argument("--log", help="append logging to this file (the rule's log)")
    for name, param in inspect.signature(run).parameters.items():
        if name == "settings":
            continue
        required = param.default is inspect.Parameter.empty
        kind = int if str(param.annotation).startswith("int") else str
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, required=required)
    args = vars(p.parse_args(argv))
    log_file = args.pop("log")
    log_to_file(log_file if is_main_process() else None)
    run(settings_cls.from_json(args.pop("settings")), **args)
