"""Chat-template SFT of the general LLM track on the one training core (:mod:`genrec.training`).

The same path as recommendation SFT (:func:`genrec.sft.run_sft`): the base model and its mode from
:func:`genrec.training.modes.load_base` and :func:`~genrec.training.modes.prepare_model` (full, LoRA,
QLoRA; ``frozen`` trains only added token rows and the general track adds none), tokenised examples
with the loss on the answer only (:func:`genrec.prompts.chat_example`), and
:func:`genrec.training.trainer.run_training` for the schedule, early stopping on the validation
loss, exact resumes and ``train_log.json``.
"""

from __future__ import annotations

import logging
import os

import torch

from genrec.llm.data import read_instructions
from genrec.logs import log_settings
from genrec.models import parameter_count
from genrec.prompts import chat_example
from genrec.settings import LLMVariantSettings, SFTSettings
from genrec.training.checkpoints import base_run_info
from genrec.training.launch import stage_main
from genrec.training.modes import load_base, prepare_model, trainable_count
from genrec.training.rows import subsample
from genrec.training.trainer import run_training, seed_everything

log = logging.getLogger(__name__)


def run_chat_sft(
    settings: SFTSettings,
    train_data: str,
    valid_data: str,
    out_dir: str,
    log_json: str,
    threads: int | None = None,
    loss_png: str | None = None,
    max_answer_tokens: int = 256,
) -> None:
    """Fine-tune the base model on instruction data and save ``final_checkpoint/``.

    Args:
        settings: the variant (model, mode, schedule; ``max_train_samples`` subsamples the training
            examples, ``max_valid_samples`` the validation ones; ``tasks`` does not apply).
        train_data, valid_data: instruction files (:func:`genrec.llm.data.read_instructions`).
        out_dir, log_json, loss_png: as for :func:`genrec.sft.run_sft`.

    Raises:
        ValueError: ``mode: frozen`` (nothing would train).
    """
    if settings.mode == "frozen":
        raise ValueError(
            "mode frozen trains only added token rows and the general track adds none: use full, lora or qlora"
        )
    log_settings(log, "chat_sft", settings)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(settings.seed)
    chats = {name: read_instructions(path) for name, path in (("train", train_data), ("valid", valid_data))}
    tokenizer, model = load_base(settings)
    model = prepare_model(model, settings, len(tokenizer), 0)
    n_trainable, n_total = trainable_count(model, settings.mode, 0), parameter_count(model)
    log.info(
        "mode %s: %d of %d parameters train (%.3f%%)", settings.mode, n_trainable, n_total, 100 * n_trainable / n_total
    )
    limits = {"train": settings.max_train_samples, "valid": settings.max_valid_samples}
    examples = {
        name: [
            chat_example(tokenizer, rows[i], settings.max_length, max_answer_tokens)
            for i in subsample(range(len(rows)), limits[name], settings.seed)
        ]
        for name, rows in chats.items()
    }
    run_training(
        model,
        tokenizer,
        settings,
        examples["train"],
        examples["valid"],
        stage="chat_sft",
        inputs=(train_data, valid_data),
        out_dir=out_dir,
        log_json=log_json,
        loss_png=loss_png or os.path.join(os.path.dirname(os.path.abspath(log_json)), "train_loss.png"),
        info={**base_run_info(settings, "chat_sft"), "added_tokens": 0},
        extra_log={
            "train_examples": len(examples["train"]),
            "weights_memory_gb": model.get_memory_footprint() / 1e9,
            "trainable_params": n_trainable,
            "total_params": n_total,
        },
    )


if __name__ == "__main__":  # what genrec.training.launch.run_stage starts on each GPU
    stage_main(run_chat_sft, LLMVariantSettings)
