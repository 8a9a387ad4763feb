"""Supervised fine-tuning: teach a causal LM to write the next item's SID.

The base model's tokenizer is extended with one new token per SID level token; the new
embedding rows start at the mean embedding of the title tokens of the items that carry that
token (so ``<a_3>`` starts near the words of its cluster, not at a random point). The task mix
(next item from SIDs or titles, title/description to SID, SID to title) comes from
:mod:`genrec.prompts`; the loss covers only the response. Four modes:

- ``full``: every weight trains.
- ``frozen``: only the new token rows of the embedding matrix (and of an untied output head)
  train; a gradient hook zeroes the rows of the base vocabulary (MiniOneRec's ``freeze_LLM``,
  which crashes there).
- ``lora``: PEFT low-rank adapters on the chosen projections, plus the new token rows as PEFT
  trainable tokens (input embedding and, when untied, output head), so the SID vocabulary learns
  and is saved with the adapters.
- ``qlora``: the same adapters over a base whose linear layers are 4-bit NF4 (bitsandbytes).

Training uses Transformers' ``Trainer`` rather than TRL's ``SFTTrainer``: our examples are
already tokenised by :mod:`genrec.prompts` (SID tokens inserted by id, response-only labels) and
are left-padded so that the LM head runs only on the last ``logits_to_keep`` positions (see
:func:`collate`); ``SFTTrainer`` computes full-sequence logits for its token accuracy and entropy
metrics, which for a small model over a 49k vocabulary is a fifth of the compute. Everything else
(bf16, gradient checkpointing, length grouping, early stopping, resume, DDP/DeepSpeed under
``accelerate launch``) is the same Trainer machinery TRL builds on.

``final_checkpoint/`` loads with :func:`genrec.models.load_checkpoint` whatever the mode.
Intermediate checkpoints go to ``.sft_checkpoints/`` beside it and a rerun after a crash resumes
from the last one (when the settings and inputs are unchanged).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.data.format import read_items, read_split
from genrec.io import atomic_path, write_json
from genrec.logs import log_settings, log_to_file
from genrec.models import (
    RUN_INFO,
    load_causal_lm,
    load_checkpoint,
    load_tokenizer,
    parameter_count,
    peak_memory_gb,
    reset_peak_memory,
)
from genrec.prompts import DESCRIPTION_WORDS, TASKS, TITLE_WORDS, clean_text, task_example
from genrec.settings import SFTSettings
from genrec.sids import load_index, sid_strings, vocabulary

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIG = REPO / "config" / "accelerate" / "zero2.yaml"  # multi-GPU SFT: accelerate + DeepSpeed
DEEPSPEED_CONFIG = REPO / "config" / "deepspeed" / "zero2.json"  # ZeRO-2, "auto" values from the Trainer


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- vocabulary
def add_sid_tokens(model, tokenizer, index: dict[int, list[str]], items: dict[int, dict], seed: int = 0) -> int:
    """Add the index's level tokens to the tokenizer and initialise their embedding rows.

    Each new row is the mean input embedding of the title tokens of the items whose SID holds
    that token, plus Gaussian noise with the per-dimension spread of the base vocabulary. The
    title mean alone would make all rows nearly equal (means of many title tokens converge on
    the vocabulary mean), and the model could then not tell ``<a_1>`` from ``<a_3>`` in a
    history; the noise keeps them apart at the scale of ordinary tokens. An untied output head
    gets the same rows.

    Returns:
        The number of tokens added.
    """
    tokens = vocabulary(index)
    added = tokenizer.add_tokens(tokens)
    if added != len(tokens):
        raise ValueError(
            f"{len(tokens) - added} SID tokens already exist in the base vocabulary; use a tokenizer without them"
        )
    old = model.get_input_embeddings().num_embeddings
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    members: dict[str, list[int]] = defaultdict(list)
    for item, toks in index.items():
        for t in toks:
            members[t].append(item)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        base = emb[:old].float()
        base_mean, base_std = base.mean(0), base.std(0)
        title_mean = {}
        for item, meta in items.items():
            ids = tokenizer(meta["title"], add_special_tokens=False)["input_ids"][:32]
            title_mean[item] = emb[ids].float().mean(0) if ids else base_mean
        ids = tokenizer.convert_tokens_to_ids(tokens)
        rows = torch.stack([torch.stack([title_mean[i] for i in members[t]]).mean(0) for t in tokens])
        rows += torch.randn(rows.shape, generator=generator) * base_std.cpu()
        emb[ids] = rows.to(emb.device, emb.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[ids] = rows.to(out.weight.device, out.weight.dtype)
    return added


def _embedding_module_names(model) -> tuple[str, str | None]:
    """Names of the input embedding module and of an untied output head (``None`` when tied)."""
    names = {id(m): n for n, m in model.named_modules()}
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == emb.weight.data_ptr()
    return names[id(emb)], None if tied else names[id(out)]


# ----------------------------------------------------------------------------- modes
def freeze_all_but_rows(model, first_new: int) -> list[torch.nn.Parameter]:
    """Train only the embedding rows from ``first_new`` on (and the same rows of an untied head).

    Every other parameter gets ``requires_grad=False``; the embedding (and head) matrices keep
    it, with a gradient hook that zeroes the rows of the base vocabulary. With Adam and no weight
    decay a zero gradient is a zero update, so the old rows stay bit-identical.

    Returns:
        The trainable parameters.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    params = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != params[0].data_ptr():
        params.append(out.weight)
    for p in params:
        mask = torch.zeros(p.shape[0], 1, dtype=p.dtype, device=p.device)
        mask[first_new:] = 1
        p.requires_grad_(True)
        p.register_hook(lambda g, m=mask: g * m)
    return params


def trainable_count(model, mode: str, n_new: int) -> int:
    """Parameters that training can change: in frozen mode only the new rows of the (masked) matrices."""
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "frozen":
        return sum(n_new * p.shape[1] for p in params)
    return sum(p.numel() for p in params)


def lora_target_names(model, targets: Sequence[str]) -> list[str]:
    """Check that every LoRA target names at least one linear layer of ``model``.

    Raises:
        ValueError: a target matches no module; the message lists the linear layer names there are.
    """
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)}
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ValueError(
            f"LoRA target module(s) {missing} match no linear layer of this model; "
            f"its linear layers are named {sorted(linear)}"
        )
    return list(targets)


def _is_linear(module) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def check_bitsandbytes() -> None:
    """Fail early and clearly if bitsandbytes cannot run 4-bit NF4 layers on this machine.

    Raises:
        RuntimeError: bitsandbytes is missing or its 4-bit layer does not run on the device.
    """
    try:
        import bitsandbytes as bnb

        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4").to(device)
        layer(torch.ones(1, 64, device=device))
    except Exception as err:  # noqa: BLE001 - any failure here means QLoRA cannot run
        raise RuntimeError(
            f"mode qlora needs bitsandbytes 4-bit NF4 layers, which do not run here ({type(err).__name__}: {err}); "
            "install bitsandbytes (pip install bitsandbytes) or use mode lora"
        ) from err


def prepare_model(model, settings: SFTSettings, first_new: int, n_new: int):
    """Set the trainable parameters of ``model`` for the settings' mode.

    Returns:
        The model to train (a PEFT model for lora/qlora).
    """
    if settings.mode == "full":
        return model
    if settings.mode == "frozen":
        freeze_all_but_rows(model, first_new)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    targets = lora_target_names(model, settings.target_modules)
    if settings.mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    emb_name, head_name = _embedding_module_names(model)
    new_ids = list(range(first_new, first_new + n_new))
    token_rows = {emb_name.rsplit(".", 1)[-1]: new_ids}
    if head_name:
        token_rows[head_name.rsplit(".", 1)[-1]] = new_ids
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        trainable_token_indices=token_rows,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_base(settings: SFTSettings):
    """Tokenizer and base model for the settings' mode (4-bit NF4 for qlora; bitsandbytes checked first)."""
    if settings.mode == "qlora":
        check_bitsandbytes()
    tokenizer = load_tokenizer(settings.model)
    dtype = torch.float32
    if settings.mode == "qlora" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16  # 4-bit weights compute in bf16 on GPU (QLoRA's recipe)
    model = load_causal_lm(settings.model, dtype, quantize_4bit=settings.mode == "qlora")
    return tokenizer, model


# ----------------------------------------------------------------------------- examples
def task_samples(
    tasks: dict[str, float],
    rows: Sequence[tuple[list[int], int]],
    items: dict[int, dict],
    sids: dict[int, str],
    seed: int,
) -> list[tuple[str, dict]]:
    """The task mix: ``(task, task_example kwargs)`` per sample, shuffled with ``seed``.

    Each task contributes its natural size (``rows`` for sequence tasks, the catalogue for item
    tasks) times its weight: the integer part as whole copies, the fraction as a seeded sample.
    ``desc2sid`` skips items without a description.
    """
    rng = random.Random(seed)
    out: list[tuple[str, dict]] = []
    for name, weight in sorted(tasks.items()):
        task = TASKS[name]
        if task.source == "sequence":
            pool = [_sequence_sample(name, h, t, items, sids) for h, t in rows]
        else:
            pool = [_item_sample(name, i, items, sids) for i in sorted(items)]
            pool = [p for p in pool if p is not None]
        whole, frac = int(weight), weight - int(weight)
        chosen = pool * whole + rng.sample(pool, round(frac * len(pool)))
        log.info("task %s: %d samples (weight %g of %d)", name, len(chosen), weight, len(pool))
        out += [(name, kw) for kw in chosen]
    rng.shuffle(out)
    return out


def _title(items: dict[int, dict], i: int) -> str:
    return clean_text(items[i]["title"], TITLE_WORDS)


def _sequence_sample(name: str, history: list[int], target: int, items, sids) -> dict:
    if TASKS[name].history == "sids":
        hist = [sids[i] for i in history]
    else:
        hist = [_title(items, i) for i in history]
    return {"history": hist, "target_sid": sids[target]}


def _item_sample(name: str, item: int, items, sids) -> dict | None:
    if name == "title2sid":
        return {"title": _title(items, item), "target_sid": sids[item]}
    if name == "sid2title":
        return {"sid": sids[item], "target_title": items[item]["title"]}
    desc = clean_text(items[item].get("description") or "", DESCRIPTION_WORDS)
    return {"description": desc, "target_sid": sids[item]} if desc else None


def subsample(candidates: Sequence[int], max_samples: int, seed: int) -> list[int]:
    """A seeded subsample of ``candidates`` in their order (all of them when ``max_samples`` is 0 or covers them).

    >>> subsample(range(5), 0, seed=0), subsample(range(5), 9, seed=0)
    ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    >>> len(subsample(range(100), 10, seed=0)), subsample(range(100), 10, seed=0) == subsample(range(100), 10, seed=0)
    (10, True)
    """
    candidates = list(candidates)
    if not max_samples or len(candidates) <= max_samples:
        return candidates
    return sorted(random.Random(seed).sample(candidates, max_samples))


def split_rows(csv: str, n_items: int, max_samples: int = 0, seed: int = 0) -> list[tuple[list[int], int]]:
    """``(history, target)`` rows of a split (a seeded subsample when ``max_samples`` > 0)."""
    df = read_split(csv, n_items=n_items)
    rows = list(zip(df["history"], df["item_id"]))
    return [rows[i] for i in subsample(range(len(rows)), max_samples, seed)]


def tokenise(tokenizer, samples: Sequence[tuple[str, dict]], max_length: int, desc: str) -> list[dict]:
    """Tokenised examples (``input_ids``, ``labels``) of ``(task, kwargs)`` samples."""
    return [task_example(tokenizer, task, max_length, **kw) for task, kw in tqdm(samples, desc=desc, unit="ex")]


def build_examples(
    csv: str, tokenizer, sids: dict[int, str], n_items: int, max_length: int, max_samples: int = 0, seed: int = 0
) -> list[dict[str, list[int]]]:
    """Tokenised next-item examples of one split (a seeded subsample when ``max_samples`` > 0)."""
    rows = split_rows(csv, n_items, max_samples, seed)
    samples = [("next_sid", _sequence_sample("next_sid", h, t, None, sids)) for h, t in rows]
    return tokenise(tokenizer, samples, max_length, f"tokenise {os.path.basename(csv)}")


class _Examples(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor | int]:
    """Left-pad a batch so that every response ends at the last position.

    Left padding lines the responses up at the end of the rows, so the LM head only needs the
    last ``logits_to_keep`` positions (the response and the token before it) instead of the
    whole sequence: the head over a 49k vocabulary is a fifth of a small model's compute.
    Position ids skip the padding, as in :func:`genrec.decoding.constrained_beam_search`.
    """
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[r, width - n :] = torch.tensor(b["input_ids"])
        labels[r, width - n :] = torch.tensor(b["labels"])
        mask[r, width - n :] = 1
    response = max(sum(x != -100 for x in b["labels"]) for b in batch)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        "labels": labels,
        "logits_to_keep": response + 1,
    }


def response_loss(outputs, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the response tokens from the last ``K`` logits (see :func:`collate`).

    Args:
        outputs: model outputs whose ``logits`` are ``(B, K, V)``, the last K positions.
        labels: ``(B, T)`` with -100 outside the response.
        num_items_in_batch: response tokens in the whole accumulated batch (Trainer passes it
            so that gradient accumulation averages over tokens, not micro-batches).
    """
    logits = outputs.logits  # (B, K, V): positions T-K..T-1
    k = logits.shape[1]
    target = labels[:, -(k - 1) :].to(logits.device)  # (B, K-1): tokens T-K+1..T-1
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    n = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
    return loss / n


# ----------------------------------------------------------------------------- outputs
def save_checkpoint(model, tokenizer, out_dir: str, info: dict, export_merged: bool = False) -> None:
    """Write ``final_checkpoint/`` atomically: a full model, or adapters + base-model record for LoRA/QLoRA.

    Args:
        model: the trained model (a PEFT model in lora/qlora modes).
        tokenizer: the extended tokenizer.
        out_dir: the directory to create.
        info: ``run_info.json`` content; must hold ``base_model`` for adapters.
        export_merged: for adapters, also write ``merged/``: a plain model with the adapters merged.
    """
    adapters = hasattr(model, "peft_config")
    with atomic_path(out_dir, is_dir=True) as tmp:
        if adapters:
            # the new token rows are PEFT trainable tokens inside the adapter file; the rest of the
            # (resized) embedding matrix is the base model's, so it is not written again
            model.save_pretrained(tmp, save_embedding_layers=False)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(os.path.join(tmp, RUN_INFO), info)
        if adapters and export_merged:
            merged, _ = load_checkpoint(tmp)
            merged.save_pretrained(os.path.join(tmp, "merged"))
            tokenizer.save_pretrained(os.path.join(tmp, "merged"))
            write_json(os.path.join(tmp, "merged", RUN_INFO), {**info, "merged_from": "adapters"})


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


def plot_loss(train_curve: list[dict], eval_curve: list[dict], path: str) -> None:
    """Training and validation loss against the optimizer step, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train_curve:
        ax.plot([p["step"] for p in train_curve], [p["loss"] for p in train_curve], label="train (response tokens)")
    if eval_curve:
        ax.plot([p["step"] for p in eval_curve], [p["loss"] for p in eval_curve], "o-", label="validation (next_sid)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(path))) or "SFT loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _fingerprint(settings: SFTSettings, *paths: str) -> str:
    """Settings and input contents: a resumed run must see exactly what the crashed run saw."""
    h = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode())
    for p in paths:
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def checkpoint_dir(out_dir: str | os.PathLike[str]) -> Path:
    """Where intermediate checkpoints of the run writing ``out_dir`` live (beside it, removed on success)."""
    return Path(out_dir).resolve().parent / ".sft_checkpoints"


def resume_point(work: Path, fingerprint: str, may_reset: bool = True) -> str | None:
    """The last checkpoint in ``work`` if it belongs to this run (same fingerprint).

    Otherwise ``work`` is cleared and stamped with ``fingerprint`` when ``may_reset`` (a single
    process, or the launcher before it starts the workers; workers of a multi-GPU job only read).
    """
    from transformers.trainer_utils import get_last_checkpoint

    stamp = work / "fingerprint.txt"
    if work.is_dir() and stamp.is_file() and stamp.read_text() == fingerprint:
        last = get_last_checkpoint(str(work))
        if last:
            return last
    if not may_reset:
        return None
    if work.exists():
        log.info("discarding checkpoints in %s from a run with other settings or inputs", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    stamp.write_text(fingerprint)
    return None


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


def training_arguments(settings: SFTSettings, output_dir: str | os.PathLike[str], n_train: int, **overrides):
    """Transformers ``TrainingArguments`` of an SFT run: schedule, evaluation/checkpoint cadence, bf16 and
    gradient checkpointing on GPU, length grouping. ``overrides`` replace single arguments (benchmarks)."""
    from transformers import TrainingArguments

    gpu = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", 1))
    steps_per_epoch = max(1, math.ceil(n_train / (settings.batch_size * settings.grad_accum * world)))
    total_steps = math.ceil(steps_per_epoch * settings.epochs)
    eval_steps = max(1, steps_per_epoch // settings.evals_per_epoch)
    kwargs = dict(
        output_dir=str(output_dir),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=max(1, int(settings.warmup_ratio * total_steps)),
        lr_scheduler_type="cosine",
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


def build_trainer(model, tokenizer, args, train: list[dict], valid: list[dict] | None, callbacks=()):
    """The Trainer of an SFT run: left-padded batches, response-only loss on the last logits."""
    from transformers import Trainer

    return Trainer(
        model=model,
        args=args,
        train_dataset=_Examples(train),
        eval_dataset=_Examples(valid) if valid else None,
        data_collator=lambda b: collate(b, tokenizer.pad_token_id),
        callbacks=list(callbacks),
        compute_loss_func=response_loss,
    )


# ----------------------------------------------------------------------------- training
def run_sft(
    settings: SFTSettings,
    train_csv: str,
    valid_csv: str,
    item_json: str,
    sid_index: str,
    out_dir: str,
    log_json: str,
    threads: int | None = None,
    loss_png: str | None = None,
) -> None:
    """Fine-tune the base model on the task mix and save ``final_checkpoint/``.

    Args:
        settings: the SFT variant.
        train_csv, valid_csv: the dataset splits (valid gives the validation loss for early stopping).
        item_json: item metadata (titles initialise the new token rows; item tasks read it).
        sid_index: the cell's ``index.json``.
        out_dir: the ``final_checkpoint`` directory to write (atomically).
        log_json: ``train_log.json`` with time, throughput, memory, parameters and loss curves.
        threads: CPU threads for torch (the rule's ``threads``).
        loss_png: where to draw the loss curves (default: beside ``log_json``).
    """
    from transformers import EarlyStoppingCallback, TrainerCallback

    log_settings(log, "sft", settings)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(settings.seed)
    items = read_items(item_json)
    index = load_index(sid_index, n_items=len(items))
    sids = sid_strings(index)
    tokenizer, model = load_base(settings)  # fails here, before any work, on a bad model/mode
    first_new = len(tokenizer)
    added = add_sid_tokens(model, tokenizer, index, items, settings.seed)
    log.info("added %d SID tokens; vocabulary now %d", added, len(tokenizer))
    model = prepare_model(model, settings, first_new, added)
    n_trainable = trainable_count(model, settings.mode, added)
    n_total = parameter_count(model)
    weights_gb = model.get_memory_footprint() / 1e9
    log.info(
        "mode %s: %d of %d parameters train (%.3f%%)", settings.mode, n_trainable, n_total, 100 * n_trainable / n_total
    )

    rows = split_rows(train_csv, len(items), settings.max_train_samples, settings.seed)
    samples = task_samples(settings.tasks, rows, items, sids, settings.seed)
    train = tokenise(tokenizer, samples, settings.max_length, "tokenise train")
    valid = build_examples(
        valid_csv, tokenizer, sids, len(items), settings.max_length, settings.max_valid_samples, settings.seed
    )
    task_counts = {t: sum(1 for name, _ in samples if name == t) for t in settings.tasks}

    class _Start(TrainerCallback):  # where this process started (a resumed run starts mid-way)
        def on_train_begin(self, args, state, control, **kwargs):
            self.step, self.tokens = state.global_step, int(state.num_input_tokens_seen)

    start_point = _Start()

    world = int(os.environ.get("WORLD_SIZE", 1))
    fingerprint = _fingerprint(settings, train_csv, valid_csv, item_json, sid_index)
    work = checkpoint_dir(out_dir)
    resume = resume_point(work, fingerprint, may_reset=world == 1)
    if resume:
        log.info("resuming from %s", resume)
    args = training_arguments(settings, work, len(train))
    callbacks = [start_point]
    if settings.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience))
    trainer = build_trainer(model, tokenizer, args, train, valid, callbacks)
    reset_peak_memory()  # report the training peak, not the load of a GGUF/4-bit model
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    train_time = time.perf_counter() - start
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
    base = trainer.model
    save_checkpoint(
        base,
        tokenizer,
        out_dir,
        {
            "stage": "sft",
            "mode": settings.mode,
            "settings": settings.to_dict(),
            "base_model": dict(settings.model),
            "quantization": "nf4" if settings.mode == "qlora" else None,
            "sid_index": str(sid_index),
            "added_tokens": added,
        },
        export_merged=settings.export_merged,
    )
    # this process's share (after a resume, the steps since the checkpoint); the curves cover the whole run
    steps_here = state.global_step - start_point.step
    samples_here = min(len(train) * settings.epochs, steps_here * settings.batch_size * settings.grad_accum * world)
    curve, eval_curve = loss_curves(state.log_history)
    write_json(
        log_json,
        {
            "mode": settings.mode,
            "train_time_s": train_time,
            "train_samples": len(train),
            "task_samples": task_counts,
            "epochs": settings.epochs,
            "steps": state.global_step,
            "planned_steps": state.max_steps,
            "stopped_early": state.global_step < state.max_steps,
            "best_step": state.best_global_step,
            "resumed_from": resume,
            "samples_per_s": samples_here / train_time,
            "tokens_per_s": (int(state.num_input_tokens_seen) - start_point.tokens) / train_time,
            "peak_memory_gb": peak_memory_gb(),
            "weights_memory_gb": weights_gb,  # parameters and buffers as stored (4-bit weights packed)
            "trainable_params": n_trainable,
            "total_params": n_total,
            "valid_loss": valid_loss,
            "loss_curve": curve,
            "eval_curve": eval_curve,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "world_size": world,
            "bf16": bool(args.bf16),
        },
    )
    plot_loss(curve, eval_curve, loss_png or os.path.join(os.path.dirname(os.path.abspath(log_json)), "train_loss.png"))
    shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- launching
def launch_command(
    gpus: int,
    args: Sequence[str],
    accelerate_config: str | os.PathLike[str] = ACCELERATE_CONFIG,
    deepspeed_config: str | os.PathLike[str] | None = DEEPSPEED_CONFIG,
) -> list[str]:
    """The ``accelerate launch`` command line that runs :func:`main` on ``gpus`` processes (DeepSpeed ZeRO-2)."""
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
        "genrec.sft",
        *args,
    ]


def cli_args(settings: SFTSettings, **paths: str | None) -> list[str]:
    """Arguments of :func:`main` for these settings and paths (``train_csv=...`` etc.)."""
    out = ["--settings", json.dumps(settings.to_dict(), sort_keys=True)]
    for key, value in paths.items():
        if value is not None:
            out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def run_sft_job(settings: SFTSettings, gpus: int = 1, **paths) -> None:
    """Run SFT in this process, or under ``accelerate launch`` on ``gpus`` GPUs when ``gpus`` > 1.

    Raises:
        RuntimeError: fewer GPUs are visible than requested, or the launched job failed.
    """
    if gpus <= 1:
        run_sft(settings, **paths)
        return
    if torch.cuda.device_count() < gpus:
        raise RuntimeError(f"the sft rule asks for {gpus} GPUs but {torch.cuda.device_count()} are visible")
    if importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError("multi-GPU SFT runs DeepSpeed ZeRO-2: install it with pip install -e '.[deepspeed]'")
    fingerprint = _fingerprint(settings, *(paths[k] for k in ("train_csv", "valid_csv", "item_json", "sid_index")))
    resume_point(checkpoint_dir(paths["out_dir"]), fingerprint)  # reset stale checkpoints once, before the workers
    cmd = launch_command(gpus, cli_args(settings, **paths))
    log.info("launching %s", " ".join(cmd))
    # the workers log to their stderr, which is this process's stderr: the rule's log file
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode:
        raise RuntimeError(f"multi-GPU SFT failed with exit code {done.returncode}; see the log above")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m genrec.sft --settings JSON --train-csv ... --out-dir ...`` (what accelerate runs)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", required=True, help="the SFT variant as JSON (SFTSettings)")
    for name in ("train-csv", "valid-csv", "item-json", "sid-index", "out-dir", "log-json"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--loss-png")
    p.add_argument("--threads", type=int)
    p.add_argument("--log", help="append logging to this file (the rule's log)")
    a = p.parse_args(argv)
    log_to_file(a.log if int(os.environ.get("RANK", 0)) == 0 else None)
    run_sft(
        SFTSettings.from_json(a.settings),
        train_csv=a.train_csv,
        valid_csv=a.valid_csv,
        item_json=a.item_json,
        sid_index=a.sid_index,
        out_dir=a.out_dir,
        log_json=a.log_json,
        threads=a.threads,
        loss_png=a.loss_png,
    )


if __name__ == "__main__":
    main()
