"""Greedy answers of a causal LM to chat prompts, with their throughput: the general track's evaluation.

Prompts are the turns before each answer rendered by the model's own chat template
(:func:`genrec.prompts.chat_example` renders the same text for training); a batch is left-padded so
every answer starts at the same position, and decoding is greedy to a fixed maximum length, so an
answer depends only on its own prompt (tested: batch size does not change it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from genrec.prompts import chat_example, end_of_response_id


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    chats: Sequence[Sequence[dict[str, str]]],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    max_prompt_length: int = 512,
    progress: bool = True,
) -> tuple[list[str], dict[str, float]]:
    """Greedy answers to each chat's turns before its answer.

    Returns:
        The answers (without the end-of-turn token) and ``{"samples_per_s", "tokens_per_s",
        "generated_tokens", "seconds"}`` (tokens: generated ones, up to and including end-of-turn).
    """
    model.eval()
    device = next(model.parameters()).device
    eos = end_of_response_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompts = []
    for chat in chats:
        ex = chat_example(tokenizer, chat, max_length=max_prompt_length + 1, max_answer_tokens=1)
        prompts.append(ex["input_ids"][: ex["labels"].count(-100)])
    answers, generated, start = [], 0, time.perf_counter()
    for s in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch", disable=not progress):
        batch = prompts[s : s + batch_size]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, width - len(p) :], mask[r, width - len(p) :] = torch.tensor(p), 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )[:, width:].tolist()
        for row in out:
            n = row.index(eos) + 1 if eos in row else len(row)
            generated += n
            answers.append(tokenizer.decode(row[: n - (eos in row)], skip_special_tokens=True).strip())
    seconds = time.perf_counter() - start
    return answers, {
        "samples_per_s": len(prompts) / seconds,
        "tokens_per_s": generated / seconds,
        "generated_tokens": generated,
        "seconds": seconds,
    }


def evaluate_chat(
    checkpoint: str,
    test_data: str,
    metrics_json: str,
    answers_json: str,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    max_prompt_length: int = 512,
    threads: int | None = None,
    max_examples: int = 0,
    n_boot: int = 2000,
    train_log: str | None = None,
) -> dict:
    """Greedy answers of a checkpoint to the test split and their ROUGE/BLEU with intervals
    (:func:`genrec.metrics.text_metrics`), inference samples/s and tokens/s, and peak memory.

    Writes ``answers_json`` (prompt turns, reference, answer and per-example ROUGE of each example)
    and ``metrics_json`` (without the per-example lists), both atomically. ``max_examples`` keeps the
    first N test examples (0: all); ``train_log`` (the checkpoint's ``train_log.json``) adds its training
    figures under ``training``: time, peak memory, trainable and total parameters, examples, losses.

    Returns:
        The metrics.
    """
    from genrec.devices import peak_memory_gb, reset_peak_memory
    from genrec.io import write_json
    from genrec.llm.data import read_instructions
    from genrec.metrics import text_metrics
    from genrec.training.checkpoints import load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    chats = read_instructions(test_data)
    if max_examples:
        chats = chats[:max_examples]
    model, tokenizer = load_checkpoint(checkpoint)
    reset_peak_memory()
    answers, speed = generate_answers(model, tokenizer, chats, max_new_tokens, batch_size, max_prompt_length)
    references = [c[-1]["content"] for c in chats]
    metrics = text_metrics(answers, references, n_boot=n_boot)
    per_example = metrics.pop("per_example")
    rows = [
        {"prompt": c[:-1], "reference": ref, "answer": a, **{m: v[i] for m, v in per_example.items()}}
        for i, (c, ref, a) in enumerate(zip(chats, references, answers))
    ]
    write_json(answers_json, rows)
    metrics.update(
        speed,
        peak_memory_gb=peak_memory_gb(),
        decoding={"greedy": True, "max_new_tokens": max_new_tokens, "batch_size": batch_size},
        ci_unit="example",
    )
    if train_log:
        metrics["training"] = training_figures(train_log)
    write_json(metrics_json, metrics)
    return metrics


TRAINING_FIGURES = (
    "mode",
    "train_time_s",
    "peak_memory_gb",
    "trainable_params",
    "total_params",
    "train_examples",
    "steps",
    "samples_per_s",
    "tokens_per_s",
    "valid_loss",
    "device",
)


def training_figures(train_log: str) -> dict:
    """The figures of a ``train_log.json`` a cell's ``metrics.json`` carries, plus the first and last training loss.

    Raises:
        ValueError: the log lacks one of :data:`TRAINING_FIGURES` (not written by :func:`genrec.llm.sft.run_chat_sft`).
    """
    from genrec.io import read_json

    log = read_json(train_log, "training log")
    missing = [k for k in TRAINING_FIGURES if k not in log]
    if missing:
        raise ValueError(f"{train_log} lacks {missing}: not a training log of the general LLM track")
    curve = [p["loss"] for p in log.get("loss_curve", [])]
    return {
        **{k: log[k] for k in TRAINING_FIGURES},
        "first_loss": curve[0] if curve else None,
        "last_loss": curve[-1] if curve else None,
    }
