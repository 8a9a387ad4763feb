"""Supervised fine-tuning: teach a causal LM to write the next item's SID.

The base model's tokenizer is extended with one new token per SID level token; the new
embedding rows start at the mean embedding of the title tokens of the items that carry that
token (so ``<a_3>`` starts near the words of its cluster, not at a random point). Training is
full fine-tuning with Transformers' ``Trainer`` on the next-item task; the loss covers only the
response (SID tokens + end of turn). ``final_checkpoint/`` is a standard Hugging Face directory.

We use ``transformers.Trainer`` rather than TRL's ``SFTTrainer`` here because examples are
tokenised by :mod:`genrec.prompts` (SID tokens inserted by id, response-only labels) and need
no text formatting or packing from TRL; the LoRA/QLoRA modes of a later issue bring TRL in.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.data.format import read_items, read_split
from genrec.io import atomic_path, write_json
from genrec.logs import log_settings
from genrec.models import load_causal_lm, load_tokenizer, peak_memory_gb
from genrec.prompts import training_example
from genrec.settings import SFTSettings
from genrec.sids import load_index, sid_strings, vocabulary

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
        rows += torch.randn(rows.shape, generator=generator) * base_std
        emb[ids] = rows.to(emb.dtype)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[ids] = rows.to(out.weight.dtype)
    return added


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
    target = labels[:, -(k - 1) :]  # (B, K-1): tokens T-K+1..T-1
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    n = num_items_in_batch if num_items_in_batch is not None else (target != -100).sum()
    return loss / n


def build_examples(
    csv: str, tokenizer, sids: dict[int, str], n_items: int, max_length: int, max_samples: int = 0, seed: int = 0
) -> list[dict[str, list[int]]]:
    """Tokenised next-item examples of one split (a seeded subsample when ``max_samples`` > 0)."""
    df = read_split(csv, n_items=n_items)
    rows = list(zip(df["history"], df["item_id"]))
    if max_samples and len(rows) > max_samples:
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), max_samples))]
    return [
        training_example(tokenizer, [sids[i] for i in h], sids[t], max_length)
        for h, t in tqdm(rows, desc=f"tokenise {os.path.basename(csv)}", unit="row")
    ]


def run_sft(
    settings: SFTSettings,
    train_csv: str,
    valid_csv: str,
    item_json: str,
    sid_index: str,
    out_dir: str,
    log_json: str,
    threads: int | None = None,
) -> None:
    """Fine-tune the base model on next-item SID prediction and save ``final_checkpoint/``.

    Args:
        settings: the SFT variant.
        train_csv, valid_csv: the dataset splits (valid gives the final validation loss).
        item_json: item metadata (titles initialise the new token rows).
        sid_index: the cell's ``index.json``.
        out_dir: the ``final_checkpoint`` directory to write (atomically).
        log_json: ``train_log.json`` with time, throughput, memory, parameters and loss curve.
        threads: CPU threads for torch (the rule's ``threads``).
    """
    from transformers import Trainer, TrainerCallback, TrainingArguments

    log_settings(log, "sft", settings)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(settings.seed)
    items = read_items(item_json)
    index = load_index(sid_index, n_items=len(items))
    sids = sid_strings(index)
    tokenizer = load_tokenizer(settings.model)
    model = load_causal_lm(settings.model)
    added = add_sid_tokens(model, tokenizer, index, items, settings.seed)
    log.info("added %d SID tokens; vocabulary now %d", added, len(tokenizer))
    train = build_examples(
        train_csv, tokenizer, sids, len(items), settings.max_length, settings.max_train_samples, settings.seed
    )
    valid = build_examples(valid_csv, tokenizer, sids, len(items), settings.max_length, 256, settings.seed)
    curve: list[dict[str, float]] = []

    class _Curve(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                curve.append(
                    {
                        "step": state.global_step,
                        "epoch": round(state.epoch or 0, 4),
                        "loss": float(logs["loss"]),
                        "learning_rate": float(logs.get("learning_rate", 0)),
                    }
                )

    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".sft_work.", dir=os.path.dirname(os.path.abspath(out_dir)))
    steps_per_epoch = math.ceil(len(train) / (settings.batch_size * settings.grad_accum))
    args = TrainingArguments(
        output_dir=work,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=max(1, int(settings.warmup_ratio * steps_per_epoch * settings.epochs)),
        lr_scheduler_type="cosine",
        logging_steps=max(1, steps_per_epoch // 20),
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_Examples(train),
        eval_dataset=_Examples(valid),
        data_collator=lambda b: collate(b, tokenizer.pad_token_id),
        callbacks=[_Curve()],
        compute_loss_func=response_loss,
    )
    n_tokens = sum(len(r["input_ids"]) for r in train) * settings.epochs
    start = time.perf_counter()
    try:
        trainer.train()
        train_time = time.perf_counter() - start
        valid_loss = float(trainer.evaluate()["eval_loss"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("trained in %.1fs; validation loss %.4f", train_time, valid_loss)
    with atomic_path(out_dir, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(
            os.path.join(tmp, "run_info.json"),
            {"stage": "sft", "settings": settings.to_dict(), "sid_index": str(sid_index), "added_tokens": added},
        )
    n_params = sum(p.numel() for p in model.parameters())
    write_json(
        log_json,
        {
            "train_time_s": train_time,
            "train_samples": len(train),
            "epochs": settings.epochs,
            "samples_per_s": len(train) * settings.epochs / train_time,
            "tokens_per_s": n_tokens / train_time,
            "peak_memory_gb": peak_memory_gb(),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": n_params,
            "valid_loss": valid_loss,
            "loss_curve": curve,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
    )
