"""GRPO from an SFT checkpoint, on TRL's ``GRPOTrainer``. What differs from its defaults, and why:

* **Rollouts** come from our constrained decoder (:mod:`genrec.decoding`, :mod:`genrec.rl.rollouts`) through the
  trainer's ``rollout_func``: one decode per prompt gives its group of ``group_size`` *distinct* SIDs of the
  index, by beam search (MiniOneRec's choice) or by stochastic beam search, a sample without
  replacement at a temperature. Every rollout is a valid SID, whatever the generation config.
* **Targets travel with the sample.** The training rows are dataset rows with their own ``target``
  and ``history`` columns, which TRL hands to the reward functions row by row; nothing is looked up
  by prompt text (MiniOneRec's ``prompt2history`` lookup gives two users with the same history one
  target).
* **Rewards** are :mod:`genrec.rl.rewards`, one TRL reward function per kind (so TRL logs each kind's
  mean and std) combined with the configured weights, then normalised per group.
* **Log-probabilities** (:mod:`genrec.rl.logps`, the one trainer subclass): the rows of a group share their
  prompt, so :func:`shared_prompt_logps` runs each distinct prompt once with its completions packed
  behind it under a block attention mask, instead of one prompt + completion sequence per row. For
  G = 16 three-token SIDs after a 60-token prompt that is 108 tokens instead of 1,008
  (``bench/rl_throughput.py`` measures it); the values are those of the unpacked sequences (tested).

The frozen reference for the KL term is the SFT model (``beta`` 0 loads none). :func:`train_grpo`
writes ``final_checkpoint/`` (a full model; LoRA adapters are merged) and returns the per-step log
(rewards per kind, KL, clip ratio, learning rate, rollout vs update time) that
:func:`genrec.rl.run.run_rl` writes as ``rl_log.json`` and ``rl_log.png``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from genrec.decoding import SIDTrie
from genrec.devices import peak_memory_gb, pick_device, reset_peak_memory
from genrec.io import file_sha256
from genrec.prompts import prompt_ids, sid_ids
from genrec.rl.logps import sid_grpo_trainer
from genrec.rl.rewards import REWARDS, Group, RewardContext
from genrec.rl.rollouts import Rollouts
from genrec.settings import RLSettings
from genrec.sids.format import load_index, sid_strings
from genrec.training.checkpoints import (
    checkpoint_state,
    fingerprint,
    load_checkpoint,
    resume_point,
    run_info,
    save_checkpoint,
    work_dir,
)
from genrec.training.modes import lora_config, lora_target_names
from genrec.training.rows import split_rows, subsample
from genrec.training.trainer import checkpoint_ledger, seed_everything, shared_training_arguments

log = logging.getLogger(__name__)

ROLLOUT_RNG = "genrec_rollout_rng.pt"  # in an intermediate checkpoint: the sampling rollouts' generator state


# ----------------------------------------------------------------------------- rewards
def reward_functions(settings: RLSettings, ctx: RewardContext) -> tuple[list, list[float]]:
    """One TRL reward function per configured kind (named after it, for TRL's per-kind logs), and the weights.

    Each function cuts the batch into groups of ``group_size`` rows, builds a :class:`~genrec.rewards.Group`
    from the rollouts' items and the row's own ``target`` and ``history`` columns, and returns the kind's
    reward per row.
    """
    g = settings.group_size
    funcs, weights = [], []
    for kind in settings.reward_kinds:

        def reward(prompts, completions, item, target, history, _kind=kind, **_) -> list[float]:
            out: list[float] = []
            for s in range(0, len(item), g):
                if len(set(target[s : s + g])) != 1:
                    raise RuntimeError("rows of one rollout group carry different targets")
                out += REWARDS[_kind](Group(item[s : s + g], target[s], history[s]), ctx)
            return out

        reward.__name__ = kind
        funcs.append(reward)
        weights.append(float(settings.rewards[kind]))
    return funcs, weights


# ----------------------------------------------------------------------------- training rows
def sft_seen_rows(sft_checkpoint: str | os.PathLike[str], n_rows: int) -> set[int]:
    """Indices of the training rows the SFT stage trained on, from the checkpoint's ``run_info.json``.

    Our SFT stage draws ``split_rows(train, max_train_samples, seed)`` (:mod:`genrec.training.rows`); a
    checkpoint without that record (not made by our SFT stage) counts as having seen every row.
    """
    info = run_info(sft_checkpoint)
    sft = info.get("settings", {}) if info.get("stage") == "sft" else {}
    if "max_train_samples" not in sft or "seed" not in sft:
        return set(range(n_rows))
    return set(subsample(range(n_rows), sft["max_train_samples"], sft["seed"]))


def rl_rows(
    train_csv: str, n_items: int, settings: RLSettings, sft_checkpoint: str | os.PathLike[str]
) -> list[tuple[list[int], int]]:
    """GRPO's ``(history, target)`` prompts: a seeded subsample of the training split, unseen rows first.

    When ``max_train_samples`` asks for fewer rows than the split holds, they come from the rows the
    SFT stage did not train on (:func:`sft_seen_rows`), topped up from the seen ones only if too few;
    drawing them from the rows SFT has already fitted teaches the policy little.
    """
    rows = split_rows(train_csv, n_items)
    k = settings.max_train_samples
    if not k or k >= len(rows):
        return rows
    seen = sft_seen_rows(sft_checkpoint, len(rows))
    unseen = [i for i in range(len(rows)) if i not in seen]
    pick = subsample(unseen, k, settings.seed)
    if len(pick) < k:
        pick = sorted(pick + subsample(sorted(seen), k - len(pick), settings.seed))
    fresh = min(k, len(unseen))
    log.info("%d training rows: %d the SFT stage did not train on, %d it did", k, fresh, k - fresh)
    return [rows[i] for i in pick]


# ----------------------------------------------------------------------------- logs
class _StepTimer:
    """A TrainerCallback recording each optimizer step's wall time and its rollout (decoding) share."""

    def __init__(self, rollouts: Rollouts):
        from transformers import TrainerCallback

        self.rollouts = rollouts
        self.steps: list[dict] = []
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.start = time.perf_counter()
                timer.rollouts.seconds = 0.0

            def on_step_end(self, args, state, control, **kwargs):
                total = time.perf_counter() - timer.start
                rollout = timer.rollouts.seconds
                timer.steps.append({"step": state.global_step, "rollout_s": rollout, "update_s": total - rollout})

        self.callback = Callback()


LOG_KEYS = {  # TRL's logged names -> ours
    "loss": "loss",
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "kl": "kl",
    "clip_ratio/region_mean": "clip_ratio",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "entropy": "entropy",
    "frac_reward_zero_std": "frac_groups_zero_std",
}


def step_log(log_history: list[dict], timings: list[dict], kinds: Sequence[str], prompts_per_step: int) -> list[dict]:
    """One record per optimizer step: loss, rewards (mean/std per kind), KL, clip ratio, lr, rollout and update time.

    Rewards exist on steps that generated rollouts; with ``num_iterations`` > 1 the further passes over
    the same rollouts have ``None`` there (and a rollout time of 0).
    """
    by_step = {t["step"]: t for t in timings}
    out = []
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue  # the end-of-training summary
        rec = {"step": entry["step"], "epoch": round(entry.get("epoch") or 0.0, 4)}
        for theirs, ours in LOG_KEYS.items():
            rec[ours] = float(entry[theirs]) if theirs in entry else None
        for kind in kinds:
            for stat in ("mean", "std"):
                value = entry.get(f"rewards/{kind}/{stat}")
                rec[f"reward_{kind}_{stat}"] = None if value is None else float(value)
        t = by_step.get(entry["step"])
        if t:
            rec.update(rollout_s=t["rollout_s"], update_s=t["update_s"])
            rec["rollout_prompts_per_s"] = prompts_per_step / t["rollout_s"] if t["rollout_s"] > 0 else None
            rec["update_prompts_per_s"] = prompts_per_step / t["update_s"] if t["update_s"] > 0 else None
        out.append(rec)
    return out


# ----------------------------------------------------------------------------- training
def train_grpo(
    settings: RLSettings,
    sft_checkpoint: str,
    train_csv: str,
    sid_index: str,
    out_dir: str,
    scorer_dir: str | None = None,
    reward_model_dir: str | None = None,
) -> tuple[float, float, list[dict], dict]:
    """GRPO from an SFT checkpoint; writes ``out_dir`` (a full model) atomically.

    Returns:
        Training seconds, peak memory (GB), the per-step log and run facts for ``rl_log.json``.
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL
    from datasets import Dataset
    from trl import GRPOConfig

    from genrec.baselines.seqrec import load_scorer

    seed_everything(settings.seed)
    device = pick_device()
    model, tokenizer = load_checkpoint(sft_checkpoint)
    index = load_index(sid_index)
    if settings.group_size > len(index):
        raise ValueError(f"group_size {settings.group_size} > the {len(index)} items of the index; lower group_size")
    trie = SIDTrie.from_index(index, tokenizer)
    sids = sid_strings(index)
    scorer = None
    if settings.needs_scorer:
        if not scorer_dir or not os.path.isdir(scorer_dir):
            raise FileNotFoundError(
                f"the collaborative reward needs the {settings.scorer} scorer (baselines: {{{settings.scorer}: ...}}); "
                f"not found: {scorer_dir}"
            )
        scorer = load_scorer(scorer_dir).eval()
        if scorer.n_items != len(index):
            raise ValueError(f"scorer {scorer_dir} covers {scorer.n_items} items, the index {len(index)}")
    reward_model = None
    if settings.needs_reward_model:
        from genrec.llm.reward import RewardScorer

        if not reward_model_dir or not os.path.isdir(reward_model_dir):
            raise FileNotFoundError(
                f"the reward_model reward needs the trained reward model {settings.reward_model!r}; "
                f"not found: {reward_model_dir}"
            )
        reward_model = RewardScorer(reward_model_dir)
    rows = rl_rows(train_csv, len(index), settings, sft_checkpoint)
    prompt_of: dict[str, list[int]] = {}
    records = []
    for history, target in rows:
        ids = prompt_ids(tokenizer, [sids[i] for i in history], settings.max_length)
        text = tokenizer.decode(ids)  # the prompt's key (TRL passes prompts to the rollout function as text)
        prompt_of.setdefault(text, ids)
        records.append({"prompt": text, "target": int(target), "history": [int(i) for i in history]})
    log.info("%d training prompts (%d distinct), groups of %d", len(records), len(prompt_of), settings.group_size)

    work = work_dir(out_dir, "rl")
    inputs = [p for p in (sft_checkpoint, train_csv, sid_index, scorer_dir, reward_model_dir) if p]
    if settings.mode == "full":
        model.requires_grad_(True)  # a merged adapter checkpoint loads with its weights frozen
    else:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(settings, lora_target_names(model, settings.target_modules)))
    model.train()
    gpu = device.type == "cuda"
    g = settings.group_size
    world = int(os.environ.get("WORLD_SIZE", 1))
    steps_per_epoch = math.ceil(len(records) / (settings.prompts_per_step * settings.grad_accum * world))
    total_steps = math.ceil(steps_per_epoch * settings.epochs)
    # checkpoints fall on whole rollout batches (every num_iterations steps), so a resume regenerates nothing
    every = max(1, steps_per_epoch // max(1, settings.checkpoints_per_epoch))
    save_steps = math.ceil(every / settings.num_iterations) * settings.num_iterations
    args = GRPOConfig(
        output_dir=str(work),
        per_device_train_batch_size=settings.prompts_per_step * g,
        gradient_accumulation_steps=settings.grad_accum,
        num_generations=g,
        max_completion_length=trie.depth,
        num_train_epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, int(settings.warmup_ratio * total_steps)),
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        beta=settings.beta,
        sync_ref_model=settings.sync_ref_model,
        ref_model_mixup_alpha=settings.ref_model_mixup_alpha,
        ref_model_sync_steps=settings.ref_model_sync_steps,
        epsilon=settings.epsilon,
        num_iterations=settings.num_iterations,
        loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards,
        temperature=1.0,  # the loss scores the untempered policy; only sample rollouts use settings.temperature
        model_init_kwargs={"local_files_only": True},
        logging_steps=1,
        save_strategy="steps" if settings.checkpoints_per_epoch else "no",
        save_steps=save_steps,
        save_total_limit=2,
        disable_dropout=True,
        **shared_training_arguments(settings.seed, settings.gradient_checkpointing),
        log_completions=False,
    )
    # The trainer's arguments hold the distributed state (one process, or this rank of a multi-GPU job);
    # accelerate's bare PartialState() reports no distribution on CPU (gloo) and would not wait here.
    main = args.process_index == 0
    with args.main_process_first(desc="checking intermediate checkpoints"):  # the main process clears and
        reference = _reference_path(model, sft_checkpoint, settings, out_dir, write=main)  # writes; the rest read
        resume = resume_point(work, fingerprint(settings, *inputs), may_reset=main)
    prior = checkpoint_state(resume) if resume else {}
    if resume:
        log.info("resuming from %s (resume %d)", resume, prior["resumes"] + 1)
    ctx = RewardContext(index=index, scorer=scorer, reward_model=reward_model)
    funcs, weights = reward_functions(settings, ctx)
    args.reward_weights = weights
    completion = {i: sid_ids(tokenizer, sids[i]) for i in index}
    rollouts = Rollouts(prompt_of, completion, trie, settings, tokenizer.pad_token_id, settings.seed)
    timer = _StepTimer(rollouts)
    if resume:  # the sampling generator and the step timings as they were at the checkpoint
        rollouts.generator.set_state(torch.load(Path(resume) / ROLLOUT_RNG))
        timer.steps = list(prior["step_timings"])

    def save_rollout_state(ckpt: Path) -> dict:
        torch.save(rollouts.generator.get_state(), ckpt / ROLLOUT_RNG)
        return {"step_timings": timer.steps}

    ledger = checkpoint_ledger(prior, save_rollout_state)
    if reference:
        model.config._name_or_path = reference  # TRL builds the frozen reference model from this path
    trainer = sid_grpo_trainer()(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        rollout_func=rollouts,
        callbacks=[timer.callback, ledger],
    )
    if settings.constrained_logps:
        trainer.sid_trie = trie
    reset_peak_memory()
    trainer.train(resume_from_checkpoint=resume)
    train_time = ledger.seconds()
    peak = peak_memory_gb()
    if main:
        policy = trainer.accelerator.unwrap_model(trainer.model)
        if hasattr(policy, "merge_and_unload"):
            policy = policy.merge_and_unload()
        policy.config._name_or_path = os.path.abspath(out_dir)
        save_checkpoint(
            policy,
            tokenizer,
            out_dir,
            {
                "stage": "rl",
                "method": "grpo",
                "settings": settings.to_dict(),
                "started_from": os.path.abspath(sft_checkpoint),
                "sid_index": str(sid_index),
                "sid_index_sha256": file_sha256(sid_index),
                "prompt_max_length": settings.max_length,
            },
        )
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(Path(out_dir).resolve().parent / ".rl_reference", ignore_errors=True)
    steps = step_log(
        trainer.state.log_history, timer.steps, settings.reward_kinds, settings.prompts_per_step * settings.grad_accum
    )
    rollout_s = sum(s.get("rollout_s", 0.0) for s in steps)
    update_s = sum(s.get("update_s", 0.0) for s in steps)
    n_prompts = trainer.state.global_step * settings.prompts_per_step * settings.grad_accum
    extra = {
        "method": "grpo",
        "rollout": settings.rollout,
        "group_size": g,
        "train_prompts": len(records),
        "optimizer_steps": trainer.state.global_step,
        "rollout_prompts_per_s": n_prompts / rollout_s if rollout_s else None,
        "update_prompts_per_s": n_prompts / update_s if update_s else None,
        "rollout_time_s": rollout_s,
        "update_time_s": update_s,
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "bf16": bool(args.bf16),
        "started_from": os.path.abspath(sft_checkpoint),
        "resumes": ledger.resumes,
        "resumed_from": resume,
    }
    log.info(
        "GRPO: %d steps in %.1fs (rollouts %.1fs, updates %.1fs); final reward %.4f",
        trainer.state.global_step,
        train_time,
        rollout_s,
        update_s,
        next((s["reward_mean"] for s in reversed(steps) if s["reward_mean"] is not None), math.nan),
    )
    return train_time, peak, steps, extra


def _reference_path(model, sft_checkpoint: str, settings: RLSettings, out_dir: str, write: bool = True) -> str | None:
    """A plain model directory holding the SFT policy, for TRL to load the frozen reference from.

    A full or frozen-mode SFT checkpoint is one already. A LoRA/QLoRA checkpoint is adapters; its
    merged model (what :func:`~genrec.models.load_checkpoint` returned) is saved beside the output
    once. With ``beta`` 0, or new LoRA adapters (whose reference is the model with them switched
    off), no reference model is loaded.
    """
    if settings.beta == 0 or settings.mode == "lora":
        return None
    if (Path(sft_checkpoint) / "config.json").is_file():
        return os.path.abspath(sft_checkpoint)
    where = Path(out_dir).resolve().parent / ".rl_reference"
    if write:  # the main process of a multi-GPU job; the others read what it wrote
        shutil.rmtree(where, ignore_errors=True)
        model.save_pretrained(where)
    return str(where)
