"""Instruction data for the general LLM fine-tuning track: reading, checking, the offline default, splits, scales.

Every example becomes a chat: a list of ``{"role", "content"}`` messages whose last one is the
assistant's answer (the only tokens the answer-only loss trains on). Three shapes are read:

* JSON (an array) or JSONL records with ``instruction``, an optional ``input`` and ``output``
  (the Alpaca shape): one user message (instruction, a blank line, input) and the answer;
* records with ``messages`` (the chat shape): system/user/assistant turns ending with the assistant;
* a Hugging Face ``datasets`` directory (``save_to_disk``) of either shape.

Bad records are refused with the file and the record (line for JSONL) named. The offline default
(:func:`catalogue_qa`) asks questions about catalogue items from their metadata (title -> brand,
title -> description, description -> title), deterministic and without a download.
"""

from __future__ import annotations

import html
import json
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from genrec.io import json_records

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
Chat = list[dict[str, str]]


def checked_messages(messages: Sequence[object], where: str, field: str = "messages") -> Chat:
    """``{"role", "content"}`` copies of chat messages, each checked (a role in :data:`ROLES`, string content).

    Raises:
        ValueError: a bad message, named by ``where`` and its index in ``field``.
    """
    chat = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: {field}[{i}] needs a role in {ROLES} and a string content, got {m!r}")
        chat.append({"role": m["role"], "content": m["content"]})
    return chat


def _from_record(record: object, where: str) -> Chat:
    """One record as a chat.

    Raises:
        ValueError: neither shape, an empty answer, a bad role or an out-of-place assistant turn.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: a record must be an object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise ValueError(f"{where}: 'messages' must be a list of at least a user and an assistant turn")
        chat = checked_messages(messages, where)
        if chat[-1]["role"] != "assistant" or not chat[-1]["content"].strip():
            raise ValueError(f"{where}: the last message must be a non-empty assistant answer")
        return chat
    missing = [k for k in ("instruction", "output") if not isinstance(record.get(k), str)]
    if missing:
        raise ValueError(
            f"{where}: needs 'instruction' and 'output' strings (optionally 'input'), or 'messages'; "
            f"missing or not a string: {missing}"
        )
    if not record["output"].strip() or not record["instruction"].strip():
        raise ValueError(f"{where}: empty instruction or output")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise ValueError(f"{where}: 'input' must be a string, got {type(extra).__name__}")
    prompt = record["instruction"].strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]


def read_instructions(path: str | os.PathLike[str]) -> list[Chat]:
    """Read an instruction dataset (``.json``, ``.jsonl`` or a ``datasets`` directory) as chats.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: unreadable JSON or a bad record (the file and record are named), or no records.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"instruction data not found: {p}")
    if p.is_dir():
        from datasets import load_from_disk

        try:
            data = load_from_disk(str(p))
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"{p} is not a Hugging Face datasets directory (save_to_disk): {err}") from err
        if hasattr(data, "keys"):  # a DatasetDict: take its train split
            if "train" not in data:
                raise ValueError(f"{p}: a DatasetDict needs a 'train' split, has {list(data)}")
            data = data["train"]
        chats = [_from_record(r, f"{p} record {i}") for i, r in enumerate(data)]
    else:
        chats = [_from_record(r, where) for r, where in json_records(p, "instruction")]
    if not chats:
        raise ValueError(f"{p} holds no records")
    return chats


def clean_metadata(text: str, max_words: int) -> str:
    """Metadata text without markup, list brackets or runs of spaces, cut to ``max_words`` words.

    >>> clean_metadata('["Blue pens. <b>Ten</b> per box.", \\'\\']', 4), clean_metadata("Labels. Br><br", 9)
    ('Blue pens. Ten per', 'Labels.')
    """
    text = html.unescape(re.sub(r"<!--.*?-->|<[^>]+>", " ", text, flags=re.S))
    text = re.sub(r"\S*[<>]\S*", " ", text)  # the remains of a tag cut by the source
    text = re.sub(r"[\[\]\"']+|\s+", " ", text).strip(" ,")
    return " ".join(text.split()[:max_words])


def catalogue_qa(items: Mapping[str, Mapping[str, str]], max_answer_words: int = 48) -> list[Chat]:
    """Questions and answers about catalogue items from their metadata (``item.json`` values with
    ``title`` and optionally ``brand``, ``description``, ``categories``), in item order.

    Per item with a title: its brand (when known), a description (when it has one of at least five
    words) and, back, the title from that description.

    >>> qa = catalogue_qa({"0": {"title": "Blue Pen", "brand": "Acme", "description": "A smooth blue gel pen."}})
    >>> [c[-1]["content"] for c in qa]
    ['Acme', 'A smooth blue gel pen.', 'Blue Pen']
    """
    chats = []
    for item in items.values():
        title = clean_metadata(item.get("title") or "", 40)
        if not title:
            continue
        brand = clean_metadata(item.get("brand") or "", 8)
        description = clean_metadata(item.get("description") or "", max_answer_words)
        if brand:
            chats.append(_qa(f"Which brand makes this product: {title}?", brand))
        if len(description.split()) >= 5:
            chats.append(_qa(f"Describe this product: {title}", description))
            chats.append(_qa(f"Which product does this description belong to?\n\n{description}", title))
    return chats


def _qa(question: str, answer: str) -> Chat:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def split_examples(chats: Sequence[Chat], test_size: int | float, seed: int = 0) -> tuple[list[Chat], list[Chat]]:
    """A seeded train/test split in which no prompt (the turns before the answer) is in both.

    Examples sharing a prompt go to the same side, so a test question is never seen in training.

    Args:
        test_size: test examples as a count, or as a fraction in (0, 1).

    Raises:
        ValueError: a test size that leaves either side empty.
    """
    groups: dict[str, list[Chat]] = {}
    for c in chats:
        groups.setdefault(json.dumps(c[:-1], sort_keys=True), []).append(c)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    want = round(test_size * len(chats)) if isinstance(test_size, float) and test_size < 1 else int(test_size)
    if not 0 < want < len(chats):
        raise ValueError(f"test_size {test_size} leaves no train or no test examples out of {len(chats)}")
    test, train = [], []
    for k in keys:
        (test if len(test) < want else train).extend(groups[k])
    return train, test


def nested_scales(train: Sequence[Chat], scales: Sequence[int | float], seed: int = 0) -> dict[str, list[Chat]]:
    """Training subsets by size, each a subset of the next: one seeded order, then its prefixes.

    Args:
        scales: counts, or fractions in (0, 1] of ``train``; named by the count they give.

    Raises:
        ValueError: a scale larger than ``train`` or not positive.
    """
    order = list(train)
    random.Random(seed).shuffle(order)
    out = {}
    for s in scales:
        n = round(s * len(order)) if isinstance(s, float) and s <= 1 else int(s)
        if not 0 < n <= len(order):
            raise ValueError(f"data scale {s} needs 1..{len(order)} training examples, gives {n}")
        out[str(n)] = order[:n]
    return out


def write_chats(path: str | os.PathLike[str], chats: Sequence[Chat]) -> None:
    """Write chats as JSONL in the ``messages`` shape (read back by :func:`read_instructions`), atomically."""
    from genrec.io import write_text

    write_text(path, "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats))


def _size(value: float) -> int | float:
    """A config size: a fraction in (0, 1) stays one, anything else is a count."""
    return value if isinstance(value, float) and value < 1 else int(value)


def prepare_llm_data(
    settings,
    item_json: str | None,
    train_out: str,
    valid_out: str,
    test_out: str,
    stats_json: str,
) -> dict:
    """Build an instruction dataset's train/valid/test splits (JSONL chats) and their statistics.

    ``source: catalogue`` asks :func:`catalogue_qa` about the items in ``item_json``; ``source: files``
    reads ``settings.train`` (and ``settings.test`` when given, else splits the test set off it). The
    validation set is always split off the training side; no prompt is in two splits.

    Args:
        settings: the entry (:class:`genrec.settings.LLMDataSettings`).

    Returns:
        The statistics written to ``stats_json``.
    """
    from genrec.io import read_json, write_json

    if settings.source == "catalogue":
        chats = catalogue_qa(read_json(item_json, "item metadata"), settings.max_answer_words)
        if not chats:
            raise ValueError(f"{item_json}: no item has a title, so no question can be asked")
    else:
        chats = read_instructions(settings.train)
    if settings.source == "files" and settings.test:
        rest, test = chats, read_instructions(settings.test)
        prompts = {json.dumps(c[:-1], sort_keys=True) for c in test}
        rest = [c for c in rest if json.dumps(c[:-1], sort_keys=True) not in prompts]
        if len(rest) < len(chats):
            log.warning("%d training examples share a prompt with the test file: dropped", len(chats) - len(rest))
    else:
        rest, test = split_examples(chats, _size(settings.test_size), settings.seed)
    train, valid = split_examples(rest, _size(settings.valid_size), settings.seed + 1)
    for name, part in (("train", train_out), ("valid", valid_out), ("test", test_out)):
        write_chats(part, {"train": train, "valid": valid, "test": test}[name])
    stats = {
        "source": settings.source,
        "examples": len(train) + len(valid) + len(test),
        "train": len(train),
        "valid": len(valid),
        "test": len(test),
        "answer_words_mean": sum(len(c[-1]["content"].split()) for c in test) / len(test),
    }
    write_json(stats_json, stats)
    log.info("instruction data: %d train, %d valid, %d test examples", len(train), len(valid), len(test))
    return stats


def write_scale(train_jsonl: str, scale: int | float, seed: int, out: str) -> int:
    """The training subset of one data scale (:func:`nested_scales`: every scale a prefix of one seeded
    order, so each is a subset of the next); returns its size."""
    (subset,) = nested_scales(read_instructions(train_jsonl), [scale], seed).values()
    write_chats(out, subset)
    log.info("data scale %s: %d of the training examples", scale, len(subset))
    return len(subset)
