"""The RL stage (rules ``rl_none`` and ``rl_grpo``): which policy evaluation loads, and GRPO's outputs.

``none`` passes the SFT checkpoint on unchanged: ``policy.json`` names it. ``grpo`` refines it
(:mod:`genrec.rl.grpo`) and writes its own ``final_checkpoint/``, ``rl_log.json`` and
``rl_log.png``; ``policy.json`` then names the refined checkpoint.
"""

from __future__ import annotations

import logging
import os

import torch

from genrec.io import write_json
from genrec.logs import log_settings
from genrec.report.plots import plot_rl_log
from genrec.settings import RLSettings
from genrec.training.checkpoints import is_checkpoint
from genrec.training.launch import is_main_process, stage_main

log = logging.getLogger(__name__)


def _policy_record(settings: RLSettings, checkpoint: str, train_time: float, peak: float | None, **extra) -> dict:
    return {
        "method": settings.method,
        "checkpoint": os.path.abspath(checkpoint),
        "settings": settings.to_dict(),
        "train_time_s": train_time,
        "peak_memory_gb": peak,
        **extra,
    }


def run_rl(
    settings: RLSettings,
    sft_checkpoint: str,
    policy_json: str,
    train_csv: str | None = None,
    sid_index: str | None = None,
    out_dir: str | None = None,
    log_json: str | None = None,
    plot_png: str | None = None,
    scorer_dir: str | None = None,
    reward_model_dir: str | None = None,
    threads: int | None = None,
) -> None:
    """Run the RL method and write ``policy.json`` (and for GRPO the checkpoint, log and plot).

    Raises:
        FileNotFoundError: the SFT checkpoint (or the collaborative reward's scorer, or the reward model)
            does not exist.
        ValueError: GRPO without its inputs, or a group larger than the catalogue.
    """
    log_settings(log, "rl", settings)
    if not is_checkpoint(sft_checkpoint):
        raise FileNotFoundError(f"SFT checkpoint not found: {sft_checkpoint}")
    if settings.method == "none":
        write_json(policy_json, _policy_record(settings, sft_checkpoint, 0.0, None))
        log.info("rl method none: evaluating the SFT checkpoint %s as is", sft_checkpoint)
        return
    missing = [n for n, v in {"train_csv": train_csv, "sid_index": sid_index, "out_dir": out_dir}.items() if not v]
    if missing:
        raise ValueError(f"grpo needs {missing}")
    if threads:
        torch.set_num_threads(threads)
    log_json = log_json or os.path.join(os.path.dirname(os.path.abspath(out_dir)), "rl_log.json")
    plot_png = plot_png or os.path.join(os.path.dirname(os.path.abspath(log_json)), "rl_log.png")
    from genrec.rl.grpo import train_grpo  # TRL, PEFT: only when GRPO runs

    train_time, peak, steps, extra = train_grpo(
        settings, sft_checkpoint, train_csv, sid_index, out_dir, scorer_dir, reward_model_dir
    )
    if not is_main_process():
        return  # the main process of a multi-GPU job writes the outputs
    write_json(log_json, {**extra, "train_time_s": train_time, "peak_memory_gb": peak, "steps": steps})
    plot_rl_log(steps, settings.reward_kinds, plot_png)
    write_json(
        policy_json,
        _policy_record(
            settings, out_dir, train_time, peak, started_from=os.path.abspath(sft_checkpoint), resumes=extra["resumes"]
        ),
    )


if __name__ == "__main__":
    stage_main(run_rl, RLSettings)
