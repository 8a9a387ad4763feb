"""The supervised training path every stage with written answers shares: Trainer set-up, resume, outputs.

:func:`run_training` takes a prepared model (:mod:`genrec.training.modes`) and tokenised examples
(:mod:`genrec.training.batches`) and does the rest the same way for every stage: a Trainer with
the settings' schedule, validation-loss early stopping, resume from the last intermediate
checkpoint after a crash, multi-process data parallelism under ``accelerate launch``, then
``final_checkpoint/``, ``train_log.json`` (time, throughput, memory, parameters, loss curves)
and the loss plot. GRPO builds its own TRL trainer but shares :func:`seed_everything` and
:func:`shared_training_arguments`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from genrec.devices import peak_memory_gb, reset_peak_memory
from genrec.io import write_json
from genrec.report.plots import plot_loss
from genrec.settings import SFTSettings
from genrec.training.batches import Examples, ResumableLengthGroupedSampler, collate, response_loss
from genrec.training.checkpoints import (
    checkpoint_state,
    fingerprint,
    resume_point,
    save_checkpoint,
    seal_checkpoint,
    work_dir,
)

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def shared_training_arguments(seed: int, gradient_checkpointing: bool) -> dict:
    """Trainer arguments SFT and GRPO share: seeds, no reporting, a progress bar, bf16 and gradient
    checkpointing on a GPU, and the CPU backend without one (several processes under torchrun or
    accelerate then run DDP over gloo)."""
    gpu = torch.cuda.is_available()
    return dict(
        report_to="none",
        seed=seed,
        data_seed=seed,
        bf16=gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=gpu and gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
        use_cpu=not gpu,
    )


def schedule_arguments(settings: SFTSettings, n_train: int) -> tuple[dict, int]:
    """The optimisation schedule's Trainer arguments (epochs, batch, AdamW, cosine decay with warm-up) of
    ``n_train`` examples on every process, and the optimizer steps per epoch."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    steps_per_epoch = max(1, math.ceil(n_train / (settings.batch_size * settings.grad_accum * world)))
    total_steps = math.ceil(steps_per_epoch * settings.epochs)
    return dict(
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=max(1, int(settings.warmup_ratio * total_steps)),
        lr_scheduler_type="cosine",
    ), steps_per_epoch


def training_arguments(settings: SFTSettings, output_dir: str | os.PathLike[str], n_train: int, **overrides):
    """Transformers ``TrainingArguments`` of a supervised run: schedule, evaluation/checkpoint cadence, bf16 and
    gradient checkpointing on GPU, length grouping. ``overrides`` replace single arguments (benchmarks)."""
    from transformers import TrainingArguments

    gpu = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", 1))
    schedule, steps_per_epoch = schedule_arguments(settings, n_train)
    eval_steps = max(1, steps_per_epoch // settings.evals_per_epoch)
    kwargs = dict(
        output_dir=str(output_dir),
        **schedule,
        per_device_eval_batch_size=settings.batch_size,
        logging_steps=max(1, min(eval_steps, steps_per_epoch // 20)),
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,  # the best and the last
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        **shared_training_arguments(settings.seed, settings.gradient_checkpointing),
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        include_num_input_tokens_seen="non_padding",
        dataloader_pin_memory=gpu,
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def build_trainer(
    model,
    tokenizer,
    args,
    train: list[dict],
    valid: list[dict] | None,
    callbacks=(),
    sampler_resume: dict[int, torch.Tensor] | None = None,
):
    """A Trainer over tokenised examples: left-padded batches, response-only loss on the last logits.

    With ``group_by_length`` its batches come from a :class:`ResumableLengthGroupedSampler` (kept as
    ``trainer.length_sampler``); ``sampler_resume`` hands it the epoch RNG state of the checkpoint a
    run resumes from, so that the resumed epoch sees its batches in the same order.
    """
    return _trainer_class()(
        model=model,
        args=args,
        train_dataset=Examples(train),
        eval_dataset=Examples(valid) if valid else None,
        data_collator=lambda b: collate(b, tokenizer.pad_token_id),
        callbacks=list(callbacks),
        compute_loss_func=response_loss,
        sampler_resume=sampler_resume,
    )


def _trainer_class():
    from transformers import Trainer

    class ResumableTrainer(Trainer):
        """Transformers' Trainer whose length-grouped batch order survives a resume."""

        def __init__(self, *a, sampler_resume=None, **kw):
            self.sampler_resume, self.length_sampler = sampler_resume, None
            super().__init__(*a, **kw)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length" or dataset is None:
                return super()._get_train_sampler(train_dataset)
            lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            self.length_sampler = ResumableLengthGroupedSampler(batch, lengths, self.sampler_resume)
            return self.length_sampler

    return ResumableTrainer


def checkpoint_ledger(prior: dict, save_extra: Callable[[Path], dict] | None = None):
    """A callback that seals every intermediate checkpoint with what a resume needs beyond Transformers' own
    state: the training time so far, the number of resumes, and whatever ``save_extra(checkpoint_dir)``
    writes there (it returns the facts to keep in the manifest).

    ``prior`` is the manifest state of the checkpoint this process resumes from (empty for a fresh run).
    """
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class Ledger(TrainerCallback):
        def __init__(self):
            self.seconds_before = float(prior.get("train_seconds", 0.0))
            self.resumes = int(prior["resumes"]) + 1 if prior else 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def seconds(self) -> float:
            """Training time of this run so far, resumed parts included (up to the checkpoint resumed from)."""
            return self.seconds_before + time.perf_counter() - self.start

        def on_save(self, args, state, control, **kwargs):
            if args.should_save:
                ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
                extra = save_extra(ckpt) if save_extra else {}
                seal_checkpoint(ckpt, {"train_seconds": self.seconds(), "resumes": self.resumes, **extra})

    return Ledger()


SAMPLER_STATE = "genrec_sampler_rng.pt"  # in an intermediate checkpoint: the epoch's batch-order RNG state


def loss_curves(log_history: list[dict]) -> tuple[list[dict], list[dict]]:
    """Training and validation loss points from the Trainer's log history (restored on resume)."""
    train, valid = [], []
    for e in log_history:
        point = {"step": e.get("step", 0), "epoch": round(e.get("epoch") or 0, 4)}
        if "loss" in e:
            train.append({**point, "loss": float(e["loss"]), "learning_rate": float(e.get("learning_rate", 0))})
        if "eval_loss" in e:
            valid.append({**point, "loss": float(e["eval_loss"])})
    return train, valid


def run_training(
    model,
    tokenizer,
    settings: SFTSettings,
    train: list[dict],
    valid: list[dict],
    *,
    stage: str,
    inputs: Sequence[str],
    out_dir: str,
    log_json: str,
    loss_png: str,
    info: dict,
    extra_log: dict,
) -> None:
    """Train, resuming a crashed run of the same settings and inputs, then write the stage's outputs.

    Args:
        model: the model to train, its trainable parameters set (a PEFT model for LoRA/QLoRA).
        tokenizer: its tokenizer (saved with the checkpoint; its pad id pads the batches).
        settings: the schedule (epochs, batch size, learning rate, evaluation cadence, early stopping).
        train, valid: tokenised examples; the validation loss selects the best checkpoint.
        stage: names the work directory of intermediate checkpoints (``.{stage}_checkpoints``).
        inputs: the input files whose contents, with the settings, decide whether a resume is valid.
        out_dir: the ``final_checkpoint`` directory to write (atomically).
        log_json: ``train_log.json`` to write.
        loss_png: the loss plot to draw.
        info: ``run_info.json`` of the checkpoint (``base_model`` is required for adapters).
        extra_log: stage facts added to ``train_log.json`` (parameters, task counts, ...).
    """
    from transformers import EarlyStoppingCallback

    world = int(os.environ.get("WORLD_SIZE", 1))
    work = work_dir(out_dir, stage)
    args = training_arguments(settings, work, len(train))
    with args.main_process_first(desc="checking intermediate checkpoints"):  # the main process resets stale ones
        resume = resume_point(work, fingerprint(settings, *inputs), may_reset=args.process_index == 0)
    prior = checkpoint_state(resume) if resume else {}
    sampler_resume = None
    if resume and (Path(resume) / SAMPLER_STATE).is_file():
        sampler_resume = {prior["sampler_epoch"]: torch.load(Path(resume) / SAMPLER_STATE)}
    if resume:
        log.info("resuming from %s (resume %d; %.1f s of training before it)", resume, prior["resumes"] + 1,
                 prior["train_seconds"])  # fmt: skip

    def save_sampler(ckpt: Path) -> dict:
        sampler = trainer.length_sampler
        if sampler is None or sampler.epoch_rng is None:
            return {}
        torch.save(sampler.epoch_rng, ckpt / SAMPLER_STATE)
        return {"sampler_epoch": sampler.epoch}

    ledger = checkpoint_ledger(prior, save_sampler)
    callbacks = [ledger]
    if settings.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience))
    trainer = build_trainer(model, tokenizer, args, train, valid, callbacks, sampler_resume)
    reset_peak_memory()  # report the training peak, not the load of a GGUF/4-bit model
    trainer.train(resume_from_checkpoint=resume)
    train_time = ledger.seconds()
    valid_loss = float(trainer.evaluate()["eval_loss"])
    state = trainer.state
    log.info(
        "trained %d steps in %.1fs; best validation loss %.4f (step %s)",
        state.global_step,
        train_time,
        valid_loss,
        state.best_global_step,
    )
    if not trainer.is_world_process_zero():
        return
    save_checkpoint(trainer.model, tokenizer, out_dir, info, export_merged=settings.export_merged)
    samples = min(len(train) * settings.epochs, state.global_step * settings.batch_size * settings.grad_accum * world)
    curve, eval_curve = loss_curves(state.log_history)
    write_json(
        log_json,
        {
            "mode": settings.mode,
            "train_time_s": train_time,  # every part of a resumed run, up to its last checkpoint
            "train_samples": len(train),
            "epochs": settings.epochs,
            "steps": state.global_step,
            "planned_steps": state.max_steps,
            "stopped_early": state.global_step < state.max_steps,
            "best_step": state.best_global_step,
            "resumes": ledger.resumes,
            "resumed_from": resume,
            "samples_per_s": samples / train_time,
            "tokens_per_s": int(state.num_input_tokens_seen) / train_time,
            "peak_memory_gb": peak_memory_gb(),
            **extra_log,
            "valid_loss": valid_loss,
            "loss_curve": curve,
            "eval_curve": eval_curve,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "world_size": world,
            "bf16": bool(args.bf16),
        },
    )
    plot_loss(curve, eval_curve, loss_png)
    shutil.rmtree(work, ignore_errors=True)
