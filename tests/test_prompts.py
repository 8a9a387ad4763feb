import pytest

from genrec.prompts import next_item_text, prompt_ids, render_prompt, sid_ids, training_example


@pytest.fixture(scope="module")
def tok():
    import copy

    from tiny import smollm2_tokenizer

    tok = copy.deepcopy(smollm2_tokenizer())  # the cached one stays without SID tokens
    tok.add_tokens([f"<{lv}_{c}>" for lv in "abc" for c in range(4)])
    return tok


def test_training_prompt_is_the_evaluation_prompt(tok):
    hist = ["<a_1><b_2><c_3>", "<a_0><b_0><c_1>"]
    ex = training_example(tok, hist, "<a_2><b_3><c_0>", max_length=256)
    prompt = prompt_ids(tok, hist)
    assert ex["input_ids"][: len(prompt)] == prompt
    assert ex["labels"][: len(prompt)] == [-100] * len(prompt)
    assert ex["input_ids"][len(prompt) :] == sid_ids(tok, "<a_2><b_3><c_0>") + [tok.eos_token_id]
    assert ex["labels"][len(prompt) :] == ex["input_ids"][len(prompt) :]


def test_prompt_never_holds_the_answer(tok):
    hist = ["<a_1><b_2><c_3>"]
    text = render_prompt(tok, next_item_text(hist))
    assert "<a_2><b_3><c_0>" not in text and text.endswith("assistant\n")


def test_each_sid_level_is_one_token(tok):
    assert len(sid_ids(tok, "<a_1><b_2><c_3>")) == 3
    with pytest.raises(KeyError):
        sid_ids(tok, "<a_9><b_2><c_3>")


def test_long_history_drops_oldest_items_first(tok):
    hist = [f"<a_{i % 4}><b_{i % 3}><c_{i % 2}>" for i in range(10)]
    full = prompt_ids(tok, hist)
    cut = prompt_ids(tok, hist, max_length=len(full) - 3)
    assert len(cut) == len(full) - 3 and cut == prompt_ids(tok, hist[1:])
