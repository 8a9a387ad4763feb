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


SAMPLES = {  # one hand-made sample per task: (task_example kwargs, the answer's text)
    "next_sid": ({"history": ["<a_1><b_2><c_3>", "<a_0><b_1><c_1>"], "target_sid": "<a_2><b_3><c_0>"}, None),
    "title_history": ({"history": ["Blue gel pen", "Red ink refill"], "target_sid": "<a_2><b_3><c_0>"}, None),
    "title2sid": ({"title": "Stapler, heavy duty", "target_sid": "<a_3><b_0><c_2>"}, None),
    "sid2title": ({"sid": "<a_3><b_0><c_2>", "target_title": "Stapler, heavy duty"}, "Stapler, heavy duty"),
    "desc2sid": ({"description": "Staples 20 sheets at once.", "target_sid": "<a_3><b_0><c_2>"}, None),
}


def test_every_task_has_a_sample_here():
    from genrec.prompts import TASKS
    from genrec.settings import SFT_TASKS

    assert set(SAMPLES) == set(TASKS) == set(SFT_TASKS)


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_no_task_prompt_contains_its_answer(tok, task):
    from genrec.prompts import task_example

    kw, answer = SAMPLES[task]
    ex = task_example(tok, task, 256, **kw)
    n_prompt = ex["labels"].count(-100)
    prompt = tok.decode(ex["input_ids"][:n_prompt])
    response = tok.decode(ex["input_ids"][n_prompt:-1])
    answer = answer or kw["target_sid"]
    assert response.replace(" ", "") == answer.replace(" ", "")  # the response is the answer ...
    assert answer not in prompt  # ... and the prompt never holds it (MiniOneRec's RL title prompts did)


@pytest.mark.parametrize("task", sorted(SAMPLES))
def test_task_prompts_are_shared_by_every_stage(tok, task):
    """SFT examples start with exactly the prompt RL and evaluation build for the same input."""
    from genrec.prompts import task_example, task_prompt_ids

    kw, _ = SAMPLES[task]
    inputs = {k: v for k, v in kw.items() if not k.startswith("target_")}
    ex = task_example(tok, task, 256, **kw)
    prompt = task_prompt_ids(tok, task, **inputs)
    assert ex["input_ids"][: len(prompt)] == prompt and ex["labels"].count(-100) == len(prompt)


def test_evaluation_builds_prompts_with_this_module():
    import genrec.evaluate
    import genrec.prompts

    assert genrec.evaluate.prompt_ids is genrec.prompts.prompt_ids


def test_long_item_text_is_shortened_to_fit(tok):
    from genrec.prompts import task_example

    desc = " ".join(f"word{i}" for i in range(200))
    ex = task_example(tok, "desc2sid", 80, description=desc, target_sid="<a_1><b_2><c_3>")
    assert len(ex["input_ids"]) <= 80 and ex["input_ids"][-4:-1] == sid_ids(tok, "<a_1><b_2><c_3>")


def test_chat_example_trains_on_the_answer_only_with_the_models_own_template():
    from tiny import smollm2_tokenizer

    from genrec.prompts import chat_example

    tok = smollm2_tokenizer()
    chat = [
        {"role": "user", "content": "Which brand makes this product: Blue Pen?"},
        {"role": "assistant", "content": "Acme"},
    ]
    ex = chat_example(tok, chat, max_length=256)
    n_prompt = ex["labels"].count(-100)
    assert ex["labels"][:n_prompt] == [-100] * n_prompt and -100 not in ex["labels"][n_prompt:]
    assert ex["input_ids"][n_prompt:] == ex["labels"][n_prompt:]
    assert tok.decode(ex["labels"][n_prompt:]) == "Acme<|im_end|>"  # the answer and the end of its turn
    prompt = tok.decode(ex["input_ids"][:n_prompt])
    assert prompt.endswith("Blue Pen?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.apply_chat_template(chat, tokenize=False).startswith(tok.decode(ex["input_ids"]))  # the template's own
    long = [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "answer " * 100}]
    cut = chat_example(tok, long, max_length=128, max_answer_tokens=20)
    assert len(cut["input_ids"]) <= 128 and len(cut["input_ids"]) - cut["labels"].count(-100) == 20
    with pytest.raises(ValueError, match="assistant answer"):
        chat_example(tok, chat[:1], max_length=256)
    with pytest.raises(ValueError, match="more than max_length 8"):
        chat_example(tok, chat, max_length=8)
