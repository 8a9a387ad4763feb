"""Supervised fine-tuning (rule ``sft``): teach a causal LM to write the next item's SID.

The base model's tokenizer is extended with one new token per SID level token; the new
embedding rows start at the mean embedding of the title tokens of the items that carry that
token (so ``<a_3>`` starts near the words of its cluster, not at a random point). The task mix
(next item from SIDs or titles, title/description to SID, SID to title) comes from
:mod:`genrec.prompts`; the loss covers only the response. The fine-tuning modes (``full``,
``frozen``, ``lora``, ``qlora``) are :mod:`genrec.training.modes`.

Training uses Transformers' ``Trainer`` (:func:`genrec.training.trainer.run_training`) rather
than TRL's ``SFTTrainer``: our examples are already tokenised by :mod:`genrec.prompts` (SID tokens
inserted by id, response-only labels) and are left-padded so that the LM head runs only on the
last ``logits_to_keep`` positions (see :func:`genrec.training.batches.collate`); ``SFTTrainer``
computes full-sequence logits for its token accuracy and entropy metrics, which for a small model
over a 49k vocabulary is a fifth of the compute. Everything else (bf16, gradient checkpointing,
length grouping, early stopping, resume, DDP/DeepSpeed under ``accelerate launch``) is the same
Trainer machinery TRL builds on.

``final_checkpoint/`` loads with :func:`genrec.training.checkpoints.load_checkpoint` whatever the
mode. Intermediate checkpoints go to ``.sft_checkpoints/`` beside it and a rerun after a crash
resumes from the last one (when the settings and inputs are unchanged).

    python -m genrec.sft --settings JSON --train-csv ... --out-dir ...   (what accelerate launches)
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from genrec.data.format import read_items
from genrec.io import file_sha256
from genrec.logs import log_settings
from genrec.models import parameter_count
from genrec.prompts import DESCRIPTION_WORDS, TASKS, TITLE_WORDS, clean_text, task_example
from genrec.settings import SFTSettings
from genrec.sids.format import load_index, sid_strings, vocabulary
from genrec.training.checkpoints import base_run_info
from genrec.training.launch import stage_main
from genrec.training.modes import load_base, prepare_model, trainable_count
from genrec.training.rows import split_rows
from genrec.training.trainer import run_training, seed_everything

log = logging.getLogger(__name__)


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
        loss_png: where to draw the loss curves (default: ``train_loss.png`` beside ``log_json``).
    """
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
    run_training(
        model,
        tokenizer,
        settings,
        train,
        valid,
        stage="sft",
        inputs=(train_csv, valid_csv, item_json, sid_index),
        out_dir=out_dir,
        log_json=log_json,
        loss_png=loss_png or os.path.join(os.path.dirname(os.path.abspath(log_json)), "train_loss.png"),
        info={
            **base_run_info(settings, "sft"),
            "sid_index": str(sid_index),
            "sid_index_sha256": file_sha256(sid_index),
            # the prompt budget of a next-item example: max_length less the answer (SID tokens + end of turn)
            "prompt_max_length": settings.max_length - max(map(len, index.values())) - 1,
            "added_tokens": added,
        },
        extra_log={
            "task_samples": {t: sum(1 for name, _ in samples if name == t) for t in settings.tasks},
            "weights_memory_gb": weights_gb,  # parameters and buffers as stored (4-bit weights packed)
            "trainable_params": n_trainable,
            "total_params": n_total,
        },
    )


if __name__ == "__main__":
    stage_main(run_sft, SFTSettings)
