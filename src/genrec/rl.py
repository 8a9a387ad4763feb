"""The RL stage. The ``none`` method passes the SFT checkpoint on unchanged.

The stage writes ``policy.json`` naming the checkpoint that evaluation loads, so ``rl-none``
costs nothing (no copy of the weights) while keeping the file chain SFT -> RL -> evaluation.
GRPO comes with its own issue and will write ``final_checkpoint/`` beside ``policy.json``.
"""

from __future__ import annotations

import logging
import os

from genrec.io import write_json
from genrec.logs import log_settings
from genrec.models import is_checkpoint
from genrec.settings import RLSettings

log = logging.getLogger(__name__)


def run_rl(settings: RLSettings, sft_checkpoint: str, policy_json: str) -> None:
    """Run the RL method and write ``policy.json``.

    Raises:
        FileNotFoundError: the SFT checkpoint does not exist.
    """
    log_settings(log, "rl", settings)
    if not is_checkpoint(sft_checkpoint):
        raise FileNotFoundError(f"SFT checkpoint not found: {sft_checkpoint}")
    write_json(
        policy_json,
        {
            "method": settings.method,
            "checkpoint": os.path.abspath(sft_checkpoint),
            "settings": settings.to_dict(),
            "train_time_s": 0.0,  # nothing trained; GRPO records its own time and peak memory here
            "peak_memory_gb": None,
        },
    )
    log.info("rl method %s: evaluating the SFT checkpoint %s as is", settings.method, sft_checkpoint)
