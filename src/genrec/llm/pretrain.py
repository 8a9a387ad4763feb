"""Continued causal-LM pretraining on raw text: an optional stage before SFT of either track.

The documents (a catalogue's item titles and descriptions, :func:`catalogue_texts`, or a text file,
:func:`read_texts`) are split into training and held-out documents (:func:`split_texts`), tokenised
with the end-of-sequence token after each, concatenated and cut into blocks of ``max_length``
tokens (the packing of Transformers' ``run_clm.py``; the last, shorter block is kept, so a small
held-out set still gives blocks). Every token but a block's first is a target. Training runs on
the one training core, as chat SFT does (:mod:`genrec.llm.sft`): :func:`~genrec.training.modes.load_base`
and :func:`~genrec.training.modes.prepare_model` with no added tokens, then
:func:`~genrec.training.trainer.run_training` with the held-out blocks as the validation set of
early stopping. Held-out perplexity is measured on the same blocks before training (the base model)
and after it (the checkpoint a later stage loads).

Later stages start from :func:`pretrained_model_spec`: the checkpoint itself in full mode, and the
plain model with the adapters merged (``merged/``, always written here) in lora/qlora modes.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import random
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from genrec.devices import pick_device
from genrec.io import json_records, read_json, write_json
from genrec.llm.data import clean_metadata
from genrec.logs import log_settings
from genrec.models import parameter_count
from genrec.settings import PretrainSettings, SFTSettings
from genrec.training.batches import collate, response_loss
from genrec.training.checkpoints import base_run_info, is_checkpoint, load_checkpoint, run_info
from genrec.training.launch import is_main_process, stage_main
from genrec.training.modes import load_base, prepare_model, trainable_count
from genrec.training.rows import subsample
from genrec.training.trainer import run_training, seed_everything

log = logging.getLogger(__name__)

STAGE = "pretrain"  # run_info.json "stage" of a continued-pretraining checkpoint
MERGED = "merged"  # the plain model inside an adapter checkpoint (genrec.training.checkpoints.save_checkpoint)
_EVERY_WORD = 1_000_000  # clean_metadata cuts to a word count; a pretraining document keeps all of its words

S = TypeVar("S", bound=SFTSettings)


# ----------------------------------------------------------------------------- documents
def _document(value: object, where: str) -> str:
    """One document: a non-empty string, or a record whose ``text`` is one.

    Raises:
        ValueError: anything else (``where`` names the file and the line or record).
    """
    text = value.get("text") if isinstance(value, Mapping) else value
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: a document is a non-empty string or a record with a non-empty 'text' string")
    return text.strip()


def read_texts(path: str | os.PathLike[str]) -> list[str]:
    """Read the documents of a text file.

    ``.txt``: one document per non-empty line; ``.jsonl``: one record with a non-empty ``text``
    string per non-empty line; ``.json``: an array of such records or of strings.

    Args:
        path: the file.

    Returns:
        The documents in file order, stripped of surrounding whitespace.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: another suffix, text that is not UTF-8 or not JSON, a bad record (the file and its
            line or record are named), or no documents.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretraining text not found: {p}")
    if p.suffix not in (".txt", ".jsonl", ".json"):
        raise ValueError(f"{p}: pretraining text must be .txt (a document per line), .jsonl or .json")
    if p.suffix == ".txt":
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{p} is not UTF-8 text: {err}") from err
        docs = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        records = json_records(p, "text")
        docs = [_document(r, where) for r, where in records]
    if not docs:
        raise ValueError(f"{p} holds no documents")
    return docs


def catalogue_document(item: Mapping[str, object]) -> str:
    """An item's document: ``title. description``, both cleaned of markup; empty without a title.

    >>> catalogue_document({"title": "Blue Pen", "description": "['A smooth <b>gel</b> pen.']"})
    'Blue Pen. A smooth gel pen.'
    >>> catalogue_document({"title": "Is it ink?", "description": ""}), catalogue_document({"description": "x"})
    ('Is it ink?', '')
    """
    title = clean_metadata(str(item.get("title") or ""), _EVERY_WORD)
    if not title:
        return ""
    description = clean_metadata(str(item.get("description") or ""), _EVERY_WORD)
    if not description:
        return title
    return f"{title}{'' if title.endswith(('.', '!', '?')) else '.'} {description}"


def catalogue_texts(item_json_path: str | os.PathLike[str]) -> list[str]:
    """One document per item of a MiniOneRec ``item.json`` (:func:`catalogue_document`), in item order.

    Items without a title are skipped.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: not a JSON object of item records, or no item has a title.
    """
    items = read_json(item_json_path, "item metadata")
    if not isinstance(items, dict):
        raise ValueError(f"{item_json_path}: item metadata must be a JSON object of item id -> record")
    docs = []
    for key, item in items.items():
        if not isinstance(item, Mapping):
            raise ValueError(f"{item_json_path}: item {key} is not a record")
        if doc := catalogue_document(item):
            docs.append(doc)
    if not docs:
        raise ValueError(f"{item_json_path}: no item has a title, so there is no text to pretrain on")
    return docs


def split_texts(docs: Sequence[str], heldout: int | float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split into training and held-out documents; copies of a document stay on one side.

    Each side keeps the documents' order.

    Args:
        docs: the documents.
        heldout: held-out documents: a fraction in (0, 1) or a whole count.
        seed: the seed of the choice.

    Returns:
        ``(train, heldout)``.

    Raises:
        ValueError: a size that is not a fraction or a whole count, or that leaves either side empty.

    >>> split_texts(["a", "b", "a", "c"], 0.5, seed=0) == split_texts(["a", "b", "a", "c"], 2, seed=0)
    True
    >>> sorted(map(len, split_texts(["a", "b", "c", "d"], 1, seed=3)))
    [1, 3]
    """
    if heldout <= 0 or (heldout >= 1 and heldout != int(heldout)):
        raise ValueError(f"heldout {heldout}: give a fraction in (0, 1) or a whole number of documents")
    want = round(heldout * len(docs)) if heldout < 1 else int(heldout)
    keys = sorted(set(docs))
    if not 0 < want < len(docs) or len(keys) < 2:
        raise ValueError(
            f"heldout {heldout} leaves no training or no held-out documents out of {len(docs)} ({len(keys)} distinct)"
        )
    random.Random(seed).shuffle(keys)
    counts = Counter(docs)
    chosen, taken = set(), 0
    for k in keys:
        if taken >= want:
            break
        chosen.add(k)
        taken += counts[k]
    if taken == len(docs):  # copies of the last chosen document filled the training side too
        raise ValueError(f"heldout {heldout} holds out every one of the {len(docs)} documents (copies stay together)")
    return [d for d in docs if d not in chosen], [d for d in docs if d in chosen]


# ----------------------------------------------------------------------------- blocks
def pack_blocks(tokenizer, docs: Sequence[str], block_length: int) -> list[dict[str, list[int]]]:
    """Tokenise documents, each followed by the end-of-sequence token, and cut the stream into blocks.

    Args:
        tokenizer: the model's tokenizer (its EOS token separates the documents).
        docs: the documents, in the order they are concatenated.
        block_length: tokens per block; the last block holds the rest (at least 2 tokens).

    Returns:
        Training examples ``{"input_ids", "labels"}``: the labels are the input ids with the first
        position -100, as it has nothing before it to be predicted from (a causal LM's shifted loss
        skips it anyway; masking it keeps the token counts of the loss exact for left-padded batches).

    Raises:
        ValueError: the tokenizer has no EOS token.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-sequence token to separate documents with")
    ids = tokenizer(list(docs), add_special_tokens=False, verbose=False)["input_ids"] if docs else []
    stream = [t for doc in ids for t in (*doc, eos)]
    blocks = [stream[i : i + block_length] for i in range(0, len(stream), block_length)]
    return [{"input_ids": b, "labels": [-100, *b[1:]]} for b in blocks if len(b) > 1]


@torch.no_grad()
def heldout_nll(model, blocks: Sequence[dict[str, list[int]]], pad_id: int, batch_size: int) -> tuple[float, int]:
    """Mean token negative log-likelihood of ``blocks`` (:func:`pack_blocks`) and the tokens it averages.

    The loss is the training loss (:func:`genrec.training.batches.response_loss` on left-padded
    batches), summed over tokens rather than averaged per batch. Runs on the model's device, in eval mode.
    """
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = collate(list(blocks[start : start + batch_size]), pad_id)
        labels = batch.pop("labels")
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model(**inputs)
        total += float(response_loss(out, labels, num_items_in_batch=1))  # a sum: divided by 1
        tokens += int((labels != -100).sum())
    return total / tokens, tokens


def _subsample(blocks: list[dict], max_samples: int, seed: int) -> list[dict]:
    return [blocks[i] for i in subsample(range(len(blocks)), max_samples, seed)]


# ----------------------------------------------------------------------------- checkpoints
def pretrained_model_spec(checkpoint_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The model spec that a later stage (SFT of either track) loads as its base.

    Args:
        checkpoint_dir: a ``final_checkpoint/`` of :func:`run_pretrain`.

    Returns:
        ``{"path": checkpoint_dir}`` in full mode, ``{"path": checkpoint_dir/merged}`` for adapters.

    Raises:
        ValueError: ``checkpoint_dir`` is not a finished continued-pretraining checkpoint.
    """
    p = Path(checkpoint_dir)
    info = run_info(p) if is_checkpoint(p) else {}
    if info.get("stage") != STAGE:
        raise ValueError(
            f"{p} is not a continued-pretraining checkpoint (no model with a run_info.json of stage {STAGE!r})"
        )
    if (p / "config.json").is_file():
        return {"path": str(p)}
    if (p / MERGED / "config.json").is_file():
        return {"path": str(p / MERGED)}
    raise ValueError(f"{p} holds pretraining adapters without {MERGED}/, the plain model later stages start from")


def based_on(settings: S, pretrained: str | os.PathLike[str] | None) -> S:
    """A variant's settings with its base model replaced by its continued-pretrained model, if it names one.

    Args:
        settings: the variant (its ``pretrain`` names a ``pretrain_variants`` entry, or is empty).
        pretrained: that entry's checkpoint (the rule's ``pretrained`` input); None without one.

    Raises:
        ValueError: ``pretrain`` and ``pretrained`` disagree (one given without the other), or the
            checkpoint is not a finished pretraining checkpoint.
    """
    name = getattr(settings, "pretrain", "")
    if bool(name) != (pretrained is not None):
        raise ValueError(
            f"pretrain {name!r} and the pretrained checkpoint {pretrained!r} disagree: give both or neither"
        )
    if pretrained is None:
        return settings
    spec = pretrained_model_spec(pretrained)
    log.info("starting from the continued-pretrained model %s (pretrain_variants.%s)", spec["path"], name)
    return dataclasses.replace(settings, model=spec)


# ----------------------------------------------------------------------------- training
def run_pretrain(
    settings: PretrainSettings,
    train_docs: Sequence[str],
    heldout_docs: Sequence[str],
    out_dir: str,
    log_json: str,
    loss_png: str,
    metrics_json: str,
    threads: int | None = None,
    inputs: Sequence[str] = (),
) -> dict:
    """Continue the causal-LM pretraining of the base model on documents and save ``final_checkpoint/``.

    Args:
        settings: the variant (model, mode, schedule; ``max_length`` is the block length,
            ``max_train_samples`` subsamples the training blocks and ``max_valid_samples`` the
            held-out blocks of the validation loss; lora/qlora always export ``merged/``).
        train_docs, heldout_docs: the documents (:func:`split_texts`).
        out_dir: the ``final_checkpoint`` directory to write (atomically).
        log_json, loss_png: ``train_log.json`` and the loss plot, as for :func:`genrec.sft.run_sft`.
        metrics_json: held-out perplexity before and after training, and the sizes (written atomically).
        threads: CPU threads for torch.
        inputs: the files the documents came from (recorded; with the documents they decide a resume).

    Returns:
        The metrics written to ``metrics_json`` (empty on the other processes of a multi-GPU run).

    Raises:
        ValueError: no training or no held-out block (too little text).
    """
    if settings.mode in ("lora", "qlora") and not settings.export_merged:
        settings = dataclasses.replace(settings, export_merged=True)  # later stages need a plain model
    log_settings(log, STAGE, settings)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(settings.seed)
    tokenizer, model = load_base(settings)
    blocks = {"train": pack_blocks(tokenizer, train_docs, settings.max_length)}
    blocks["heldout"] = pack_blocks(tokenizer, heldout_docs, settings.max_length)
    for name, docs in (("train", train_docs), ("heldout", heldout_docs)):
        if not blocks[name]:
            raise ValueError(f"the {len(docs)} {name} documents give no block of at least 2 tokens")
    train = _subsample(blocks["train"], settings.max_train_samples, settings.seed)
    valid = _subsample(blocks["heldout"], settings.max_valid_samples, settings.seed)  # the early-stopping loss
    main = is_main_process()
    if main:  # the base model the training starts from (for qlora, its 4-bit weights)
        if not getattr(model, "is_loaded_in_4bit", False):  # a 4-bit model is already placed
            model.to(pick_device())
        nll_before, heldout_tokens = heldout_nll(model, blocks["heldout"], tokenizer.pad_token_id, settings.batch_size)
        log.info("held-out perplexity before: %.2f over %d tokens", math.exp(nll_before), heldout_tokens)
    model = prepare_model(model, settings, len(tokenizer), 0)
    n_trainable, n_total = trainable_count(model, settings.mode, 0), parameter_count(model)
    log.info(
        "mode %s: %d of %d parameters train (%.3f%%)", settings.mode, n_trainable, n_total, 100 * n_trainable / n_total
    )
    sizes = {
        "train_docs": len(train_docs),
        "train_blocks": len(train),
        "train_tokens": sum(len(b["input_ids"]) for b in train),
        "heldout_docs": len(heldout_docs),
        "heldout_blocks": len(blocks["heldout"]),
        "block_length": settings.max_length,
    }
    with tempfile.TemporaryDirectory(prefix="genrec_pretrain_") as tmp:
        # run_training decides a resume by the settings and input files; the documents are a file here
        digest = Path(tmp) / "documents.sha256"
        digest.write_text(hashlib.sha256(json.dumps([list(train_docs), list(heldout_docs)]).encode()).hexdigest())
        run_training(
            model,
            tokenizer,
            settings,
            train,
            valid,
            stage=STAGE,
            inputs=(*inputs, str(digest)),
            out_dir=out_dir,
            log_json=log_json,
            loss_png=loss_png,
            info={**base_run_info(settings, STAGE), "added_tokens": 0, "texts": list(map(str, inputs)), **sizes},
            extra_log={
                **sizes,
                "weights_memory_gb": model.get_memory_footprint() / 1e9,
                "trainable_params": n_trainable,
                "total_params": n_total,
            },
        )
    if not main:
        return {}
    del model  # free its memory before the checkpoint loads
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    spec = pretrained_model_spec(out_dir)
    trained, _ = load_checkpoint(spec["path"])
    nll_after, _ = heldout_nll(
        trained.to(pick_device()), blocks["heldout"], tokenizer.pad_token_id, settings.batch_size
    )
    metrics = {
        "mode": settings.mode,
        "perplexity_before": math.exp(nll_before),
        "perplexity_after": math.exp(nll_after),
        "heldout_nll_before": nll_before,
        "heldout_nll_after": nll_after,
        "heldout_tokens": heldout_tokens,
        **sizes,
        "model": spec["path"],
    }
    write_json(metrics_json, metrics)
    log.info(
        "held-out perplexity %.2f -> %.2f (%d tokens)", metrics["perplexity_before"], metrics["perplexity_after"],
        heldout_tokens,
    )  # fmt: skip
    return metrics


def pretrain_stage(
    settings: PretrainSettings,
    texts: str,
    out_dir: str,
    log_json: str,
    loss_png: str,
    metrics_json: str,
    threads: int | None = None,
) -> None:
    """The ``pretrain`` rule: read the documents, hold some out, and run :func:`run_pretrain`.

    Args:
        settings: the variant (``text: catalogue`` reads ``texts`` as an ``item.json``, ``text: file``
            with :func:`read_texts`; ``heldout`` and ``seed`` split it).
        texts: the rule's ``texts`` input.
        out_dir, log_json, loss_png, metrics_json, threads: as for :func:`run_pretrain`.
    """
    docs = catalogue_texts(texts) if settings.text == "catalogue" else read_texts(texts)
    train, heldout = split_texts(docs, settings.heldout, settings.seed)
    log.info("%d documents from %s: %d to train on, %d held out", len(docs), texts, len(train), len(heldout))
    run_pretrain(settings, train, heldout, out_dir, log_json, loss_png, metrics_json, threads, inputs=(texts,))


if __name__ == "__main__":
    stage_main(pretrain_stage, PretrainSettings)
