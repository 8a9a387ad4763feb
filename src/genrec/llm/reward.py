"""A reward model of the general LLM track: preference pairs, TRL's RewardTrainer, pairwise accuracy, a scorer.

A pair is ``{"prompt": [messages], "chosen": str, "rejected": str}``: the turns before the answer and
two answers to them, the first preferred. Pairs come from a file (:func:`read_pairs`: TRL's preference
shapes, plain text or conversational) or, offline, from the QA chats of :mod:`genrec.llm.data`
(:func:`offline_pairs`: the reference answer against the answer to another question of the same
template). The model is the base causal LM's body with a one-output score head
(``AutoModelForSequenceClassification``, ``num_labels=1``), trained on the Bradley-Terry loss
``-log sigmoid(r(chosen) - r(rejected))`` by TRL's ``RewardTrainer`` in full or LoRA mode.

Every answer is rendered once, by :func:`encode`: the prompt turns through the tokenizer's own chat
template up to the assistant's turn, then the answer and the end-of-turn token (the text the SFT
and GRPO policies produce, :func:`genrec.prompts.chat_example`). Training, the held-out pairwise
accuracy and :class:`RewardScorer` all score these same tokens, so the scorer reproduces the metric.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from genrec.io import json_records
from genrec.llm.data import Chat, checked_messages, read_instructions, split_examples
from genrec.prompts import chat_example
from genrec.settings import RewardSettings
from genrec.training.rows import subsample

log = logging.getLogger(__name__)

Pair = dict  # {"prompt": [{"role", "content"}, ...], "chosen": str, "rejected": str}
STAGE = "reward"  # run_info.json's stage of a reward checkpoint; RewardScorer refuses any other


# ----------------------------------------------------------------------------- pairs
def _messages(value: object, where: str, field: str) -> list[dict[str, str]]:
    """A list of chat messages, checked (roles, string contents)."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: '{field}' must be a string or a non-empty list of messages")
    return checked_messages(value, where, field)


def _pair(record: object, where: str) -> Pair:
    """One record as a pair: explicit prompt (string or messages) with string or message answers, or TRL's
    implicit-prompt shape (``chosen`` and ``rejected`` full conversations sharing the turns before the answer).

    Raises:
        ValueError: a missing or empty field, answers that are not assistant turns, different prompts in
            ``chosen`` and ``rejected``, or ``chosen`` equal to ``rejected``.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: a record must be an object, got {type(record).__name__}")
    missing = [k for k in ("chosen", "rejected") if k not in record]
    if "prompt" not in record and not all(isinstance(record.get(k), list) for k in ("chosen", "rejected")):
        missing.insert(0, "prompt")  # only conversational answers may carry the prompt themselves
    if missing:
        raise ValueError(f"{where}: needs 'prompt', 'chosen' and 'rejected'; missing {missing}")
    prompt = record.get("prompt", [])
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"{where}: empty 'prompt'")
        prompt = [{"role": "user", "content": prompt}]
    elif prompt or "prompt" in record:
        prompt = _messages(prompt, where, "prompt")
    sides = {}
    for key in ("chosen", "rejected"):
        value = record[key]
        turns = [{"role": "assistant", "content": value}] if isinstance(value, str) else _messages(value, where, key)
        if turns[-1]["role"] != "assistant" or not turns[-1]["content"].strip():
            raise ValueError(f"{where}: '{key}' must end with a non-empty assistant answer")
        sides[key] = (prompt + turns[:-1], turns[-1]["content"])
    (p_chosen, chosen), (p_rejected, rejected) = sides["chosen"], sides["rejected"]
    if p_chosen != p_rejected:
        raise ValueError(f"{where}: 'chosen' and 'rejected' answer different prompts (their turns before the answer)")
    if not p_chosen:
        raise ValueError(f"{where}: empty 'prompt': the answers need turns to answer")
    if chosen.strip() == rejected.strip():
        raise ValueError(f"{where}: 'chosen' and 'rejected' are the same answer, so neither is preferred")
    return {"prompt": p_chosen, "chosen": chosen, "rejected": rejected}


def read_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    """Read preference pairs from a JSON array or a ``.jsonl`` file (one record a line).

    Each record holds ``prompt`` (a string: one user message, or a list of ``{"role", "content"}``
    messages), ``chosen`` and ``rejected`` (strings, or message lists ending with the assistant's turn:
    TRL's conversational shape; without ``prompt`` they are whole conversations sharing the turns before
    the answer, TRL's implicit-prompt shape).

    Returns:
        Pairs ``{"prompt": [messages], "chosen": str, "rejected": str}`` in file order.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: unreadable JSON or a bad record (the file and its record index, or line for JSONL,
            are named), or no records.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"preference pairs not found: {p}")
    pairs = [_pair(r, where) for r, where in json_records(p, "pairs")]
    if not pairs:
        raise ValueError(f"{p} holds no preference pairs")
    return pairs


def _template(chat: Chat) -> tuple[str, ...]:
    """The question template of a chat: the first three words of the turn before its answer."""
    return tuple(chat[-2]["content"].split()[:3])


def offline_pairs(chats: Sequence[Chat], seed: int = 0) -> list[Pair]:
    """Preference pairs from QA chats, without labels: each reference answer is preferred to another's.

    The rejected answer is the answer of a seeded-random other example whose question starts with the
    same three words (the same template, so the same kind of answer: a brand against a brand) and whose
    answer differs; when the template has no such example, any example with a different answer. An
    example whose answer every other example shares is left out.

    >>> qa = [[{"role": "user", "content": f"Which brand makes {t}?"}, {"role": "assistant", "content": b}]
    ...       for t, b in [("pens", "Acme"), ("ink", "Bolt"), ("tape", "Acme")]]
    >>> [(p["chosen"], p["rejected"]) for p in offline_pairs(qa)]
    [('Acme', 'Bolt'), ('Bolt', 'Acme'), ('Acme', 'Bolt')]

    Raises:
        ValueError: no example has an answer that differs from another's.
    """
    rng = random.Random(seed)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, c in enumerate(chats):
        groups.setdefault(_template(c), []).append(i)
    everyone = list(range(len(chats)))
    pairs, skipped = [], 0
    for chat in chats:
        answer = chat[-1]["content"]
        other = None
        for pool in (groups[_template(chat)], everyone):
            other = _draw(rng, pool, lambda j, a=answer: chats[j][-1]["content"].strip() != a.strip())
            if other is not None:
                break
        if other is None:
            skipped += 1
            continue
        rejected = chats[other][-1]["content"]
        pairs.append({"prompt": [dict(m) for m in chat[:-1]], "chosen": answer, "rejected": rejected})
    if skipped:
        log.warning("offline pairs: %d of %d examples left out (no other example has another answer)", skipped,
                    len(chats))  # fmt: skip
    if not pairs:
        raise ValueError(f"no preference pair can be made from {len(chats)} examples: their answers are all the same")
    return pairs


def _draw(rng: random.Random, pool: Sequence[int], ok: Callable[[int], bool], tries: int = 8) -> int | None:
    """A seeded-random member of ``pool`` that passes ``ok``: a few blind draws, then a draw among all that pass
    (so large pools cost O(1) per example, and a pool with one good member still finds it)."""
    for _ in range(tries):
        j = pool[rng.randrange(len(pool))]
        if ok(j):
            return j
    good = [j for j in pool if ok(j)]
    return good[rng.randrange(len(good))] if good else None


def split_pairs(pairs: Sequence[Pair], test_size: int | float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """A seeded train/test split of pairs with no prompt on both sides (as :func:`genrec.llm.data.split_examples`).

    Args:
        test_size: test pairs as a count, or as a fraction in (0, 1).

    Returns:
        ``(train, test)``.

    Raises:
        ValueError: a test size that leaves either side empty.
    """
    # split_examples groups chats by their turns before the last: carry each pair as that last element
    train, test = split_examples([[*p["prompt"], p] for p in pairs], test_size, seed)
    return [c[-1] for c in train], [c[-1] for c in test]


def reward_pairs(
    settings: RewardSettings, qa: str | None = None, pairs: str | None = None
) -> tuple[list[Pair], list[Pair]]:
    """The train and held-out pairs of a reward variant, split by ``settings.test_pairs`` (:func:`split_pairs`);
    ``settings.max_train_samples`` keeps a seeded subsample of the training pairs (the held-out ones stay whole).

    Args:
        settings: the variant (:class:`genrec.settings.RewardSettings`).
        qa: the instruction file whose chats give offline pairs (:func:`offline_pairs`): the training split
            of the ``llm_data`` entry ``settings.data``.
        pairs: the preference pairs file ``settings.pairs`` (:func:`read_pairs`); read when given.

    Raises:
        ValueError: neither file given.
    """
    if pairs:
        found = read_pairs(pairs)
    elif qa:
        found = offline_pairs(read_instructions(qa), settings.seed)
    else:
        raise ValueError("a reward model needs its pairs file or, for offline pairs, its instruction data (qa)")
    log.info("%d preference pairs from %s", len(found), pairs or f"the questions and answers of {qa}")
    train, test = split_pairs(found, settings.test_pairs, settings.seed)
    if settings.max_train_samples and len(train) > settings.max_train_samples:
        train = [train[i] for i in subsample(range(len(train)), settings.max_train_samples, settings.seed)]
        log.info("training on a seeded %d of the training pairs (max_train_samples)", len(train))
    return train, test


def reward_stage(
    settings: RewardSettings,
    qa: str | None = None,
    pairs: str | None = None,
    *,
    out_dir: str,
    log_json: str,
    metrics_json: str,
    loss_png: str | None = None,
    threads: int | None = None,
) -> dict:
    """The ``reward_model`` rule: its pairs (:func:`reward_pairs`), then :func:`run_reward` on them.

    Returns:
        The held-out metrics.
    """
    train, test = reward_pairs(settings, qa, pairs)
    return run_reward(settings, train, test, out_dir, log_json, metrics_json, loss_png, threads)


# ----------------------------------------------------------------------------- model
def encode(tokenizer, prompt: Sequence[Mapping[str, str]], answer: str, max_length: int) -> list[int]:
    """Token ids a reward is computed on: the prompt turns by the chat template, then the answer and end-of-turn.

    An answer keeps at most half of ``max_length``; a prompt that does not fit the rest loses the last
    words of its last turn (:func:`genrec.prompts.chat_example`).
    """
    chat = [*prompt, {"role": "assistant", "content": answer}]
    return chat_example(tokenizer, chat, max_length, max_answer_tokens=max(1, max_length // 2))["input_ids"]


def load_reward_base(spec: Mapping[str, str]):
    """The base model of a spec with a fresh one-output score head (``AutoModelForSequenceClassification``).

    Resolved as :func:`genrec.models.load_causal_lm` resolves a causal LM (package, directory, GGUF file,
    hub id), in float32; a GGUF model is dequantised on load and then treated as a plain model.
    """
    from transformers import AutoModelForSequenceClassification

    from genrec.models import load_pretrained, resolve_model

    name, kwargs = resolve_model(dict(spec))
    log.info("loading reward model base from %s %s", name, kwargs)
    return load_pretrained(AutoModelForSequenceClassification, name, kwargs, num_labels=1, dtype=torch.float32)


@torch.no_grad()
def score_ids(model, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = 16) -> list[float]:
    """The reward of each token sequence: one forward pass per batch of similar lengths, right-padded.

    The score head reads the last token that is not ``pad_id`` (``model.config.pad_token_id``), as in training.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = [0.0] * len(sequences)
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        width = max(len(sequences[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(sequences[i])], mask[r, : len(sequences[i])] = torch.tensor(sequences[i]), 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, 1)
        for r, value in zip(rows, logits[:, 0].float().tolist()):
            out[r] = value
    return out


def pairwise_metrics(chosen: Sequence[float], rejected: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Pairwise accuracy (share of pairs with ``r(chosen) > r(rejected)``; a tie counts as wrong) with a 95%
    bootstrap interval over pairs, and the mean margin ``r(chosen) - r(rejected)``.

    >>> pairwise_metrics([1.0, 2.0, 0.0, 3.0], [0.0, 1.0, 0.0, 1.0])["pairwise_accuracy"]
    0.75
    """
    from genrec.metrics import bootstrap_cis

    correct = [float(c > r) for c, r in zip(chosen, rejected)]
    margins = [c - r for c, r in zip(chosen, rejected)]
    ci = bootstrap_cis({"pairwise_accuracy": correct, "mean_margin": margins}, n_boot=n_boot, seed=seed)
    return {
        "pairwise_accuracy": sum(correct) / len(correct),
        "ci95": ci["pairwise_accuracy"],
        "mean_margin": sum(margins) / len(margins),
        "margin_ci95": ci["mean_margin"],
    }


def _peft_model(model, settings: RewardSettings):
    """LoRA adapters on the settings' projections, the score head trained in full beside them."""
    from peft import get_peft_model

    from genrec.training.modes import lora_config, lora_target_names

    targets = lora_target_names(model, settings.target_modules)
    return get_peft_model(model, lora_config(settings, targets, modules_to_save=["score"], task_type="SEQ_CLS"))


def run_reward(
    settings: RewardSettings,
    train_pairs: list[Pair],
    test_pairs: list[Pair],
    out_dir: str,
    log_json: str,
    metrics_json: str,
    loss_png: str | None = None,
    threads: int | None = None,
    n_boot: int = 2000,
) -> dict:
    """Train a reward model on preference pairs and score it on held-out ones.

    Writes ``out_dir`` (the final checkpoint, atomically: a plain sequence-classification model, LoRA
    adapters merged, its tokenizer and ``run_info.json``), ``log_json`` (loss curve, train time, peak
    memory, parameters, pair counts, settings), ``metrics_json`` (pairwise accuracy on ``test_pairs``
    with its 95% bootstrap interval over pairs, the untrained model's accuracy, mean margins) and, when
    given, the loss plot ``loss_png``.

    Args:
        settings: the variant (:class:`genrec.settings.RewardSettings`): base model, mode (full or lora),
            epochs, learning rate, batch size (pairs per device per step), max_length, seed.
        train_pairs, test_pairs: pairs (:func:`read_pairs`, :func:`offline_pairs`, :func:`split_pairs`).
        threads: torch CPU threads (None: torch's default).
        n_boot: bootstrap resamples of the intervals.

    Returns:
        The metrics written to ``metrics_json``.

    Raises:
        ValueError: a mode other than full or lora, or no training or test pairs.
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from genrec.devices import peak_memory_gb, reset_peak_memory
    from genrec.io import write_json
    from genrec.logs import log_settings
    from genrec.models import load_tokenizer, parameter_count
    from genrec.report.plots import plot_loss
    from genrec.training.checkpoints import base_run_info, save_checkpoint, work_dir
    from genrec.training.trainer import loss_curves, schedule_arguments, seed_everything, shared_training_arguments

    if settings.mode not in ("full", "lora"):
        raise ValueError(f"reward model mode {settings.mode!r}: use full or lora")
    if not train_pairs or not test_pairs:
        raise ValueError(f"need training and test pairs, got {len(train_pairs)} and {len(test_pairs)}")
    log_settings(log, "reward", settings)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(settings.seed)  # the score head is drawn when the model loads
    tokenizer = load_tokenizer(settings.model)
    model = load_reward_base(settings.model)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score head reads the last non-pad token
    ids = {
        name: {
            "chosen_ids": [encode(tokenizer, p["prompt"], p["chosen"], settings.max_length) for p in pairs],
            "rejected_ids": [encode(tokenizer, p["prompt"], p["rejected"], settings.max_length) for p in pairs],
        }
        for name, pairs in (("train", train_pairs), ("test", test_pairs))
    }
    before = pairwise_metrics(*_test_scores(model, ids["test"], settings.batch_size), n_boot, settings.seed)
    log.info("untrained reward model: pairwise accuracy %.3f on %d test pairs", before["pairwise_accuracy"],
             len(test_pairs))  # fmt: skip
    if settings.mode == "lora":
        model = _peft_model(model, settings)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = parameter_count(model)
    log.info("mode %s: %d of %d parameters train", settings.mode, n_trainable, n_total)

    schedule, steps_per_epoch = schedule_arguments(settings, len(train_pairs))
    work = work_dir(out_dir, STAGE)
    args = RewardConfig(
        output_dir=str(work),
        **schedule,
        logging_steps=max(1, math.ceil(steps_per_epoch * settings.epochs) // 50),
        save_strategy="no",
        max_length=settings.max_length,  # encode() already fits every sequence, so TRL filters none out
        **shared_training_arguments(settings.seed, settings.gradient_checkpointing),
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(ids["train"]),
        processing_class=tokenizer,
    )
    reset_peak_memory()  # report the training peak, not the load of a GGUF model
    start = time.perf_counter()
    trainer.train()
    train_time = time.perf_counter() - start
    peak = peak_memory_gb()
    model = trainer.model
    if settings.mode == "lora":
        model = model.merge_and_unload()  # a plain model: RewardScorer and GRPO load it without PEFT
    after = pairwise_metrics(*_test_scores(model, ids["test"], settings.batch_size), n_boot, settings.seed)
    log.info("trained %d steps in %.1fs: pairwise accuracy %.3f [%.3f, %.3f] (untrained %.3f)",
             trainer.state.global_step, train_time, after["pairwise_accuracy"], *after["ci95"],
             before["pairwise_accuracy"])  # fmt: skip
    if not trainer.is_world_process_zero():
        return after
    info = {**base_run_info(settings, STAGE), "num_labels": 1, "max_length": settings.max_length}
    if settings.mode == "lora":
        info["merged_from"] = "adapters"
    save_checkpoint(model, tokenizer, out_dir, info)
    curve, _ = loss_curves(trainer.state.log_history)
    write_json(
        log_json,
        {
            "mode": settings.mode,
            "train_time_s": train_time,
            "peak_memory_gb": peak,
            "trainable_params": n_trainable,
            "total_params": n_total,
            "train_pairs": len(train_pairs),
            "test_pairs": len(test_pairs),
            "epochs": settings.epochs,
            "steps": trainer.state.global_step,
            "samples_per_s": len(train_pairs) * settings.epochs / train_time,
            "loss_curve": curve,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "world_size": int(os.environ.get("WORLD_SIZE", 1)),
            "bf16": bool(args.bf16),
            "settings": settings.to_dict(),
        },
    )
    metrics = {
        **after,
        "accuracy_before": before["pairwise_accuracy"],
        "ci95_before": before["ci95"],
        "margin_before": before["mean_margin"],
        "n_test_pairs": len(test_pairs),
        "n_train_pairs": len(train_pairs),
        "ci_unit": "pair",
        "n_boot": n_boot,
    }
    write_json(metrics_json, metrics)
    if loss_png:
        plot_loss(curve, [], loss_png)
    shutil.rmtree(work, ignore_errors=True)
    return metrics


def _test_scores(model, ids: Mapping[str, list[list[int]]], batch_size: int) -> tuple[list[float], list[float]]:
    n = len(ids["chosen_ids"])
    scores = score_ids(model, ids["chosen_ids"] + ids["rejected_ids"], model.config.pad_token_id, batch_size)
    return scores[:n], scores[n:]


# ----------------------------------------------------------------------------- scoring
class RewardScorer:
    """A trained reward checkpoint (:func:`run_reward`'s ``out_dir``), loaded once and scored many times.

    Example:
        ``RewardScorer("final_checkpoint").score(["Which brand makes pens?"], ["Acme"])`` gives one float.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike[str], device: str | torch.device | None = None):
        """Load the model (float32, eval mode) and tokenizer.

        Raises:
            FileNotFoundError: ``checkpoint_dir`` is not a model directory.
            ValueError: it is not a reward checkpoint (its ``run_info.json`` names another stage): its
                score head would be random.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from genrec.devices import pick_device
        from genrec.models import prepare_tokenizer
        from genrec.training.checkpoints import run_info

        p = Path(checkpoint_dir)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"no reward checkpoint at {p} (no config.json)")
        info = run_info(p)
        if info.get("stage") != STAGE:
            raise ValueError(
                f"{p} is not a reward model checkpoint (its run_info.json stage is {info.get('stage')!r}, "
                f"not {STAGE!r}); train one with run_reward"
            )
        self.max_length = int(info["max_length"])
        self.tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(p, local_files_only=True))
        model = AutoModelForSequenceClassification.from_pretrained(p, dtype=torch.float32, local_files_only=True)
        self.model = model.to(device or pick_device()).eval()

    def score(
        self,
        prompts: Sequence[Sequence[Mapping[str, str]]] | Sequence[str],
        answers: Sequence[str],
        batch_size: int = 16,
    ) -> list[float]:
        """The reward of each answer to its prompt (higher: more preferred).

        Args:
            prompts: per answer, its prompt turns, or a string (one user message).
            answers: the answers, one per prompt.
            batch_size: sequences per forward pass.

        Raises:
            ValueError: prompts and answers differ in number.
        """
        if len(prompts) != len(answers):
            raise ValueError(f"need one prompt per answer, got {len(prompts)} prompts and {len(answers)} answers")
        turns = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        ids = [encode(self.tokenizer, t, a, self.max_length) for t, a in zip(turns, answers)]
        return score_ids(self.model, ids, self.model.config.pad_token_id, batch_size)
