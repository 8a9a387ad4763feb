"""Prompt wording and tokenisation: the single source shared by SFT, RL and evaluation.

Every training task is a :class:`Task` in :data:`TASKS`: a user-turn template, the kind of answer
(a SID or an item title) and where its samples come from (one per row of a split, or one per
catalogue item). A sample is rendered as a chat turn when the tokenizer has a chat template
(instruct models), else as a plain Alpaca-style frame. The response is the answer followed by
the end-of-turn token. SID tokens are looked up by id, never re-tokenised from text, so every
tokenizer yields exactly one token per SID level and the decoder can start right after the
prompt (no model-specific prefix offsets as in MiniOneRec). No template holds its own answer:
MiniOneRec's RL title-to-SID prompts ended with the SID they asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from genrec.sids.format import parse_sid

# Kept short on purpose: every prompt token costs compute in SFT, RL and evaluation. SIDs are
# written back to back: each starts with its level-a token, so no separator is needed (", "
# would cost two tokens per item).
SYSTEM = "You are a recommender. Answer with one item ID."
TITLE_SYSTEM = "You are a recommender. Answer with the item's title."
NEXT_ITEM = "Items the user chose, oldest first: {history}. Next item?"
_PLAIN = "### Instruction:\n{system}\n\n### Input:\n{user}\n\n### Response:\n"
TITLE_WORDS = 16  # words of a title kept in prompts and title answers
DESCRIPTION_WORDS = 48  # words of a description kept in the description-to-SID prompt


@dataclass(frozen=True)
class Task:
    """One SFT task: how a sample is asked and what answers it.

    Attributes:
        name: the key in ``sft_variants.*.tasks``.
        template: the user turn; ``{history}`` (sequence tasks) or ``{title}``, ``{description}``,
            ``{sid}`` (item tasks) are filled in.
        answer: ``sid`` (the target item's SID tokens) or ``title`` (its title text).
        source: ``sequence`` (one sample per split row: a history and its next item) or ``item``
            (one sample per catalogue item).
        history: what a sequence task's history lists: ``sids`` (written back to back) or
            ``titles`` (quoted, separated by ``; ``).
    """

    name: str
    template: str
    answer: str
    source: str
    history: str = ""

    @property
    def system(self) -> str:
        return SYSTEM if self.answer == "sid" else TITLE_SYSTEM


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        # MiniOneRec task 1 (SidSFTDataset): the task evaluated and refined with RL.
        Task("next_sid", NEXT_ITEM, "sid", "sequence", history="sids"),
        # MiniOneRec task 5 (TitleHistory2SidSFTDataset): titles in, SID out.
        Task(
            "title_history",
            "Titles of items the user chose, oldest first: {history}. Next item?",
            "sid",
            "sequence",
            history="titles",
        ),
        # MiniOneRec task 2 (SidItemFeatDataset), both directions; full SIDs, never cut to 3 levels.
        Task("title2sid", 'Which item has the title "{title}"?', "sid", "item"),
        Task("sid2title", "What is the title of item {sid}?", "title", "item"),
        # Description/feature to SID (MiniOneRec's RL description task, here without the answer leak).
        Task("desc2sid", 'Which item is described as: "{description}"?', "sid", "item"),
    )
}
_FIELDS = {"title", "description", "sid"}


def get_task(task: str | Task) -> Task:
    """A task by name (or the task itself)."""
    return TASKS[task] if isinstance(task, str) else task


def clean_text(text: str, max_words: int) -> str:
    """Collapse whitespace (and quotes, which frame the text) and keep the first ``max_words`` words.

    >>> clean_text('  A  "big"   pen  ', 2)
    "A 'big'"
    """
    words = re.sub(r"\s+", " ", str(text).replace('"', "'")).strip().split(" ")
    return " ".join(words[:max_words])


def task_text(task: str | Task, history: Sequence[str] = (), **fields: str) -> str:
    """The user turn of a task.

    Args:
        task: a name in :data:`TASKS` or a :class:`Task`.
        history: SIDs (``next_sid``) or titles (``title_history``) of the history, oldest first.
        fields: ``title``, ``description`` or ``sid`` of the item (item tasks).

    >>> task_text("title_history", ["Blue pen", "Red ink"])
    'Titles of items the user chose, oldest first: "Blue pen"; "Red ink". Next item?'
    """
    t = get_task(task)
    unknown = set(fields) - _FIELDS
    if unknown:
        raise ValueError(f"task {t.name}: unknown field(s) {sorted(unknown)}")
    if t.source == "sequence":
        joined = "".join(history) if t.history == "sids" else "; ".join(f'"{h}"' for h in history)
        return t.template.format(history=joined)
    return t.template.format(**{k: fields.get(k, "") for k in _FIELDS})


def next_item_text(history_sids: Sequence[str]) -> str:
    """The user turn of the next-item task.

    >>> next_item_text(["<a_1><b_2>", "<a_3><b_4>"])
    'Items the user chose, oldest first: <a_1><b_2><a_3><b_4>. Next item?'
    """
    return task_text("next_sid", history_sids)


def render_prompt(tokenizer, user_text: str, system: str = SYSTEM) -> str:
    """The full prompt text, ending where the response starts."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user_text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    return bos + _PLAIN.format(system=system, user=user_text)


def task_prompt_ids(
    tokenizer, task: str | Task, history: Sequence[str] = (), max_length: int | None = None, **fields: str
) -> list[int]:
    """Token ids of a task's prompt, cut to ``max_length``.

    Sequence tasks drop the oldest history items first; item tasks halve the words of their text
    field (description, else title) until the prompt fits. Raises ``ValueError`` if even the shortest prompt
    does not fit.
    """
    t = get_task(task)
    hist, fields = list(history), dict(fields)
    while True:
        text = render_prompt(tokenizer, task_text(t, hist, **fields), t.system)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_length is None or len(ids) <= max_length:
            return ids
        if hist:
            hist = hist[1:]
            continue
        long = [k for k in ("description", "title") if fields.get(k)]
        if not long:
            raise ValueError(f"task {t.name}: the bare prompt needs {len(ids)} tokens > max_length {max_length}")
        words = fields[long[0]].split(" ")
        fields[long[0]] = " ".join(words[: len(words) // 2])


def prompt_ids(tokenizer, history_sids: Sequence[str], max_length: int | None = None) -> list[int]:
    """Token ids of the next-item prompt; the oldest history items are dropped to fit ``max_length``."""
    return task_prompt_ids(tokenizer, "next_sid", history_sids, max_length)


def end_of_response_id(tokenizer) -> int:
    """The token that closes a response (the chat template's end-of-turn token is the EOS)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; a response could never end")
    return int(tokenizer.eos_token_id)


def sid_ids(tokenizer, sid: str) -> list[int]:
    """Token ids of a SID's level tokens, one id per level.

    Raises:
        KeyError: a level token is not in the tokenizer's vocabulary.
    """
    ids = tokenizer.convert_tokens_to_ids(parse_sid(sid))
    unk = tokenizer.unk_token_id
    missing = [t for t, i in zip(parse_sid(sid), ids) if i is None or (unk is not None and i == unk)]
    if missing:
        raise KeyError(f"SID tokens {missing} are not in the tokenizer; was it extended with this index?")
    return list(ids)


def response_ids(tokenizer, task: str | Task, target_sid: str = "", target_title: str = "") -> list[int]:
    """Token ids of a task's answer: the SID tokens or the title, then the end-of-turn token."""
    t = get_task(task)
    if t.answer == "sid":
        body = sid_ids(tokenizer, target_sid)
    else:
        body = tokenizer(clean_text(target_title, TITLE_WORDS), add_special_tokens=False)["input_ids"]
        if not body:
            raise ValueError(f"task {t.name}: empty title answer")
    return body + [end_of_response_id(tokenizer)]


def task_example(
    tokenizer,
    task: str | Task,
    max_length: int,
    history: Sequence[str] = (),
    target_sid: str = "",
    target_title: str = "",
    **fields: str,
) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one SFT example of any task; the loss covers only the response."""
    response = response_ids(tokenizer, task, target_sid, target_title)
    prompt = task_prompt_ids(tokenizer, task, history, max_length - len(response), **fields)
    return {"input_ids": prompt + response, "labels": [-100] * len(prompt) + response}


def training_example(tokenizer, history_sids: Sequence[str], target_sid: str, max_length: int) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one next-item example (the evaluated task)."""
    return task_example(tokenizer, "next_sid", max_length, history_sids, target_sid=target_sid)


def chat_example(tokenizer, chat: Sequence[Mapping[str, str]], max_length: int, max_answer_tokens: int = 256) -> dict:
    """``input_ids`` and ``labels`` of one general-track example (:mod:`genrec.llm.data`): the turns
    before the last rendered by the model's own chat template up to the assistant's turn, then the
    answer and the end-of-turn token; the loss covers only the answer.

    The answer is cut to ``max_answer_tokens`` (keeping the end-of-turn token); a prompt that does not
    fit in the rest of ``max_length`` loses the last words of its last turn, halving until it fits.

    Raises:
        ValueError: the last turn is not the assistant's, or even a one-word prompt does not fit.
    """
    *turns, answer = [dict(m) for m in chat]
    if answer.get("role") != "assistant" or not turns:
        raise ValueError("a chat example needs turns before an assistant answer")
    body = tokenizer(answer["content"], add_special_tokens=False)["input_ids"][: max(1, max_answer_tokens - 1)]
    response = body + [end_of_response_id(tokenizer)]
    while True:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        else:
            system = next((t["content"] for t in turns if t["role"] == "system"), SYSTEM)
            text = render_prompt(tokenizer, "\n\n".join(t["content"] for t in turns if t["role"] != "system"), system)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(prompt) + len(response) <= max_length:
            return {"input_ids": prompt + response, "labels": [-100] * len(prompt) + response}
        words = turns[-1]["content"].split(" ")
        if len(words) <= 1:
            raise ValueError(f"a chat prompt needs {len(prompt)} tokens, more than max_length {max_length} allows")
        turns[-1]["content"] = " ".join(words[: len(words) // 2])
