"""Prompt wording and tokenisation: the single source shared by SFT, RL and evaluation.

A sample is rendered as a chat turn when the tokenizer has a chat template (instruct models),
else as a plain Alpaca-style frame. The response is the target's SID tokens followed by the
end-of-turn token. SID tokens are looked up by id, never re-tokenised from text, so every
tokenizer yields exactly one token per SID level and the decoder can start right after the
prompt (no model-specific prefix offsets as in MiniOneRec).
"""

from __future__ import annotations

from collections.abc import Sequence

from genrec.sids import parse_sid

# Kept short on purpose: every prompt token costs compute in SFT, RL and evaluation. SIDs are
# written back to back: each starts with its level-a token, so no separator is needed (", "
# would cost two tokens per item).
SYSTEM = "You are a recommender. Answer with one item ID."
NEXT_ITEM = "Items the user chose, oldest first: {history}. Next item?"
_PLAIN = "### Instruction:\n{system}\n\n### Input:\n{user}\n\n### Response:\n"


def next_item_text(history_sids: Sequence[str]) -> str:
    """The user turn of the next-item task.

    >>> next_item_text(["<a_1><b_2>", "<a_3><b_4>"])
    'Items the user chose, oldest first: <a_1><b_2><a_3><b_4>. Next item?'
    """
    return NEXT_ITEM.format(history="".join(history_sids))


def render_prompt(tokenizer, user_text: str) -> str:
    """The full prompt text, ending where the response starts."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    return bos + _PLAIN.format(system=SYSTEM, user=user_text)


def prompt_ids(tokenizer, history_sids: Sequence[str], max_length: int | None = None) -> list[int]:
    """Token ids of the next-item prompt; the oldest history items are dropped to fit ``max_length``."""
    hist = list(history_sids)
    while True:
        ids = tokenizer(render_prompt(tokenizer, next_item_text(hist)), add_special_tokens=False)["input_ids"]
        if max_length is None or len(ids) <= max_length or not hist:
            return ids
        hist = hist[1:]


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


def training_example(tokenizer, history_sids: Sequence[str], target_sid: str, max_length: int) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` of one SFT example; the loss covers only the response."""
    response = sid_ids(tokenizer, target_sid) + [end_of_response_id(tokenizer)]
    prompt = prompt_ids(tokenizer, history_sids, max_length - len(response))
    return {"input_ids": prompt + response, "labels": [-100] * len(prompt) + response}
