import json

import pytest
import torch
from tiny import random_index, sid_model, two_cpu_processes

from genrec.config import ConfigError, validate_config
from genrec.data.format import Sample, read_split, samples_to_frame
from genrec.decoding import SIDTrie, constrained_beam_search
from genrec.prompts import prompt_ids, sid_ids
from genrec.rl.grpo import reward_functions, rl_rows, sft_seen_rows
from genrec.rl.logps import shared_prompt_logps, trl_batch
from genrec.rl.rewards import REWARDS, RewardContext
from genrec.rl.rollouts import Rollouts
from genrec.rl.run import run_rl
from genrec.settings import RLSettings
from genrec.sids.format import format_sid
from genrec.training.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def sid_lm(tiny_model_dir):
    index = random_index()
    model, tok = sid_model(tiny_model_dir, index)
    return model, tok, index


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_logps_equal_one_sequence_per_row(sid_lm, attn):
    model, tok, index = sid_lm
    model.set_attn_implementation(attn)
    sids = [format_sid(index[i]) for i in index]
    a, b = prompt_ids(tok, sids[:1]), prompt_ids(tok, sids[3:8])
    c = [sid_ids(tok, sids[i]) for i in (2, 5, 9, 11)]
    short = c[3][:2]  # a shorter completion: right padding inside its slot
    prompts = [a, b, a, b, a, b]  # shuffled rows, as TRL hands them over
    completions = [c[0], c[1], c[2], c[0], short, c[3]]
    ids, mask, k = trl_batch(prompts, completions, tok.pad_token_id)
    model.zero_grad()
    logps, ent = shared_prompt_logps(model, ids, mask, k, compute_entropy=True)
    logps.sum().backward()
    packed_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    total = 0.0
    for r, (pr, comp) in enumerate(zip(prompts, completions)):
        out = model(input_ids=torch.tensor([pr + comp])).logits[0].float()
        lp = torch.log_softmax(out[len(pr) - 1 : len(pr) - 1 + len(comp)], -1)
        want = lp.gather(-1, torch.tensor(comp).unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(logps[r, : len(comp)], want.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ent[r, : len(comp)], -(lp.exp() * lp).sum(-1).detach(), atol=1e-5, rtol=1e-5)
        assert (logps[r, len(comp) :] == 0).all()
        total = total + want.sum()
    total.backward()
    for got, want in zip(packed_grad, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    model.zero_grad()
    # restricted to the index: at each level, the softmax over the SID tokens the trie allows there
    trie = SIDTrie.from_index(index, tok)
    with torch.no_grad():
        logps, ent = shared_prompt_logps(model, ids, mask, k, compute_entropy=True, trie=trie)
        for r, (pr, comp) in enumerate(zip(prompts, completions)):
            out = model(input_ids=torch.tensor([pr + comp])).logits[0].float()
            node = 0
            for j, t in enumerate(comp):
                kids = trie.children[node][trie.children[node] >= 0]
                lp = torch.log_softmax(out[len(pr) - 1 + j, kids], -1)
                want = lp[(kids == t).nonzero()[0, 0]]
                torch.testing.assert_close(logps[r, j], want, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(ent[r, j], -(lp.exp() * lp).sum(), atol=1e-5, rtol=1e-5)
                node = int(trie.child_node[node][trie.children[node] == t][0])
            assert (logps[r, len(comp) :] == 0).all()
    model.set_attn_implementation("sdpa")


class _Trainer:  # what the rollout function reads from TRL's trainer
    def __init__(self, model):
        self.model = model
        self.accelerator = type("A", (), {"unwrap_model": staticmethod(lambda m: m)})()


@pytest.mark.parametrize("rollout", ["beam", "sample"])
def test_rollouts_are_distinct_valid_sids_per_group(sid_lm, rollout):
    model, tok, index = sid_lm
    sids = {i: format_sid(index[i]) for i in index}
    trie = SIDTrie.from_index(index, tok)
    texts, prompt_of = [], {}
    for hist in ([0, 1], [4, 5, 6], [0, 1]):  # the first and last users share their history
        ids = prompt_ids(tok, [sids[i] for i in hist])
        texts.append(tok.decode(ids))
        prompt_of[texts[-1]] = ids
    settings = RLSettings(method="grpo", rollout=rollout, group_size=8, temperature=1.5)
    completion = {i: sid_ids(tok, sids[i]) for i in index}
    rollouts = Rollouts(prompt_of, completion, trie, settings, tok.pad_token_id, seed=0)
    batch = [t for t in texts for _ in range(8)]
    out = rollouts(batch, _Trainer(model))
    valid = {tuple(v) for v in completion.values()}
    assert len(out["completion_ids"]) == len(out["item"]) == len(out["prompt_ids"]) == 24
    assert all(tuple(c) in valid for c in out["completion_ids"])  # every rollout is a SID of the index
    assert all(c == completion[i] for c, i in zip(out["completion_ids"], out["item"]))
    for g in range(3):
        group = out["item"][8 * g : 8 * g + 8]
        assert len(set(group)) == 8  # a group is 8 distinct candidates
        assert all(p == prompt_of[texts[g]] for p in out["prompt_ids"][8 * g : 8 * g + 8])
        logp = out["rollout_logp"][8 * g : 8 * g + 8]
        assert logp == sorted(logp, reverse=True)  # best first in both modes
    if rollout == "beam":
        best, _ = constrained_beam_search(model, [prompt_of[texts[0]]], trie, 8, tok.pad_token_id)
        assert out["item"][:8] == best[0].tolist() == out["item"][16:]
    assert rollouts.seconds > 0
    with pytest.raises(RuntimeError, match="whole groups"):
        rollouts(batch[:-1], _Trainer(model))


def test_identical_prompts_keep_their_own_targets():
    index = {1: ["<a_1>", "<b_1>"], 2: ["<a_1>", "<b_2>"], 3: ["<a_2>", "<b_1>"]}
    settings = RLSettings(method="grpo", group_size=3, rewards={"exact": 1.0, "prefix": 0.5})
    funcs, weights = reward_functions(settings, RewardContext(index))
    assert [f.__name__ for f in funcs] == ["exact", "prefix"] and weights == [1.0, 0.5]
    kwargs = dict(
        prompts=["same prompt"] * 6,
        completions=["..."] * 6,
        item=[1, 2, 3, 1, 2, 3],  # both groups decoded the same candidates
        target=[2, 2, 2, 3, 3, 3],  # but the two users chose different items
        history=[[5, 6]] * 6,
    )
    assert funcs[0](**kwargs) == [0, 1, 0, 0, 0, 1]
    assert funcs[1](**kwargs) == [0.5, 1, 0, 0, 0, 1]
    with pytest.raises(RuntimeError, match="different targets"):
        funcs[0](**{**kwargs, "target": [2, 2, 3, 3, 3, 3]})


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_model_dir):
    return _toy(tmp_path_factory.mktemp("rl_toy"), tiny_model_dir)


def _toy(root, tiny_model_dir):
    """A full-model 'SFT' checkpoint of the tiny LM and a training split whose target is learnable.

    Almost every row's target is item 7; two rows share a history but chose different items.
    """
    import random

    index = random_index()
    model, tok = sid_model(tiny_model_dir, index)
    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "sft"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    (root / "index.json").write_text(json.dumps({str(i): v for i, v in index.items()}))
    rng = random.Random(0)
    samples = [Sample(str(u), tuple(rng.sample([i for i in index if i != 7], 3)), 7) for u in range(14)]
    samples += [Sample("14", (1, 2, 3), 7), Sample("15", (1, 2, 3), 12)]
    csv = root / "train.csv"
    samples_to_frame(samples, {i: {"title": f"item {i}"} for i in index}).to_csv(csv, index=False)
    assert len(read_split(str(csv), n_items=len(index))) == 16
    return root, ckpt, index


def _target_logp(model, tok, index, hist_items, target):
    sids = {i: format_sid(index[i]) for i in index}
    trie = SIDTrie.from_index(index, tok)
    items, scores = constrained_beam_search(model, [prompt_ids(tok, [sids[i] for i in hist_items])], trie, 30, 0)
    return float(scores[0][items[0] == target][0])


def test_grpo_learns_a_learnable_reward_and_keeps_targets(toy, tmp_path, monkeypatch):
    root, ckpt, index = toy
    seen = []
    exact = REWARDS["exact"]

    def recording(group, ctx):
        seen.append((tuple(group.history), group.target))
        return exact(group, ctx)

    monkeypatch.setitem(REWARDS, "exact", recording)
    settings = RLSettings(
        method="grpo", rollout="sample", temperature=2.0, group_size=8, prompts_per_step=4, epochs=3,
        learning_rate=0.002, beta=0.0, num_iterations=2, rewards={"exact": 1.0, "prefix": 1.0}, warmup_ratio=0.0,
        max_grad_norm=1.0,
    )  # fmt: skip
    out = tmp_path / "rl"
    run_rl(settings, str(ckpt), str(out / "policy.json"), str(root / "train.csv"), str(root / "index.json"),
           str(out / "final_checkpoint"))  # fmt: skip
    # the target is carried with each row: the two users with the same history keep their own items
    assert ((1, 2, 3), 7) in seen and ((1, 2, 3), 12) in seen
    policy = json.loads((out / "policy.json").read_text())
    assert policy["method"] == "grpo" and policy["checkpoint"] == str((out / "final_checkpoint").resolve())
    assert policy["train_time_s"] > 0 and policy["peak_memory_gb"] > 0
    log = json.loads((out / "rl_log.json").read_text())
    steps = log["steps"]
    assert len(steps) == log["optimizer_steps"] == 3 * 4 * 2  # 16 rows / 4 prompts, 3 epochs, 2 iterations
    for key in ("reward_exact_mean", "reward_prefix_std", "kl", "clip_ratio", "learning_rate", "rollout_s", "update_s"):
        assert all(key in s for s in steps), key
    # each batch of rollouts is optimised twice: the second pass starts from the updated policy, whose
    # surrogate loss on the same rollouts is lower (the first pass's ratio is 1, so its loss is 0)
    first, second = [s["loss"] for s in steps[0::2]], [s["loss"] for s in steps[1::2]]
    assert all(abs(x) < 1e-6 for x in first)
    assert all(y < x for x, y in zip(first[1:], second[1:]))  # (step 1 has learning rate 0: warmup)
    assert (out / "rl_log.png").stat().st_size > 1000
    before, tok = load_checkpoint(ckpt)
    after, _ = load_checkpoint(out / "final_checkpoint")
    assert not torch.equal(before.get_input_embeddings().weight, after.get_input_embeddings().weight)
    hist = [0, 4, 9]  # a history it never saw: the reward taught "item 7 comes next"
    assert _target_logp(after, tok, index, hist, 7) > _target_logp(before, tok, index, hist, 7) + 0.5
    assert all(s["reward_exact_mean"] is None for s in steps[1::2])  # the second pass generates nothing


def test_synced_reference_follows_the_policy(toy, tmp_path):
    """With alpha 1 and a sync after every step, the reference is the policy each step starts from, so the
    KL term is 0 from the second step on; the frozen reference drifts apart from the policy."""
    root, ckpt, _ = toy
    kl = {}
    for sync in (False, True):
        s = RLSettings(
            method="grpo", rollout="sample", temperature=2.0, group_size=4, prompts_per_step=4, epochs=1,
            learning_rate=0.005, beta=0.1, rewards={"exact": 1.0}, warmup_ratio=0.0, checkpoints_per_epoch=0,
            sync_ref_model=sync, ref_model_mixup_alpha=1.0, ref_model_sync_steps=1,
        )  # fmt: skip
        out = tmp_path / str(sync)
        run_rl(s, str(ckpt), str(out / "policy.json"), str(root / "train.csv"), str(root / "index.json"),
               str(out / "final_checkpoint"))  # fmt: skip
        kl[sync] = [step["kl"] for step in json.loads((out / "rl_log.json").read_text())["steps"]]
    assert len(kl[True]) == 4 and all(abs(k) < 1e-6 for k in kl[True][1:])
    assert kl[False][0] == pytest.approx(0, abs=1e-6) and max(kl[False][1:]) > 1e-4


def test_rl_none_passes_the_sft_checkpoint_on(toy, tmp_path):
    _, ckpt, _ = toy
    run_rl(RLSettings(), str(ckpt), str(tmp_path / "policy.json"))
    policy = json.loads((tmp_path / "policy.json").read_text())
    assert policy["checkpoint"] == str(ckpt.resolve()) and policy["train_time_s"] == 0


@pytest.mark.slow
def test_grpo_with_a_trained_reward_model_as_the_reward(toy, tmp_path, tiny_model_dir):
    """A reward model trained to prefer item 7's SID after any history is the reward GRPO reads."""
    from genrec.llm.reward import RewardScorer, run_reward
    from genrec.prompts import SYSTEM, next_item_text
    from genrec.rl.rewards import Group
    from genrec.settings import RewardSettings

    root, ckpt, index = toy
    sid = {i: format_sid(index[i]) for i in index}
    others = [i for i in index if i != 7]
    pairs = [
        {"prompt": [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": next_item_text([sid[h] for h in others[k % 20 : k % 20 + 3]])}],
         "chosen": sid[7], "rejected": sid[others[(k * 7) % len(others)]]}
        for k in range(48)
    ]  # fmt: skip
    rm = tmp_path / "rm"
    s = RewardSettings(model={"path": str(tiny_model_dir)}, pairs="pairs.jsonl", mode="full", epochs=2, batch_size=8,
                       learning_rate=3e-3, max_length=128)  # fmt: skip
    m = run_reward(s, pairs[:40], pairs[40:], str(rm), str(tmp_path / "rm.json"), str(tmp_path / "rm_m.json"))
    assert m["pairwise_accuracy"] >= 0.75
    ctx = RewardContext(index, reward_model=RewardScorer(str(rm)))
    values = REWARDS["reward_model"](Group([3, 7, 12], target=12, history=[1, 2]), ctx)
    assert values[1] == max(values)  # the reward model's preference, not the target's
    settings = RLSettings(method="grpo", group_size=4, prompts_per_step=4, beta=0.0, learning_rate=1e-3,
                          rewards={"reward_model": 1.0}, reward_model="rm", warmup_ratio=0.0)  # fmt: skip
    out = tmp_path / "rl"
    with pytest.raises(FileNotFoundError, match="reward model 'rm'"):
        run_rl(settings, str(ckpt), str(out / "policy.json"), str(root / "train.csv"), str(root / "index.json"),
               str(out / "final_checkpoint"))  # fmt: skip
    run_rl(settings, str(ckpt), str(out / "policy.json"), str(root / "train.csv"), str(root / "index.json"),
           str(out / "final_checkpoint"), reward_model_dir=str(rm))  # fmt: skip
    steps = json.loads((out / "rl_log.json").read_text())["steps"]
    assert len(steps) == 4 and all("reward_reward_model_mean" in st for st in steps)


def test_grpo_prompts_prefer_training_rows_sft_did_not_see(toy, tmp_path):
    from genrec.training.rows import split_rows

    root, _, index = toy
    csv, every = str(root / "train.csv"), split_rows(str(root / "train.csv"), len(index))
    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "run_info.json").write_text(json.dumps({"stage": "sft", "settings": {"max_train_samples": 10, "seed": 3}}))
    seen = split_rows(csv, len(index), 10, seed=3)  # the rows this SFT run trained on
    assert sft_seen_rows(sft, 16) == {i for i, row in enumerate(every) if row in seen}
    fresh = rl_rows(csv, len(index), RLSettings(method="grpo", max_train_samples=4), sft)
    assert len(fresh) == 4 and not any(row in seen for row in fresh)
    topped = rl_rows(csv, len(index), RLSettings(method="grpo", max_train_samples=8), sft)
    assert len(topped) == 8 and sum(row not in seen for row in topped) == 6  # all 6 unseen rows, then 2 seen
    assert rl_rows(csv, len(index), RLSettings(method="grpo", max_train_samples=0), sft) == every
    assert len(sft_seen_rows(tmp_path, 16)) == 16  # no record of SFT's rows: every row counts as seen


def test_grpo_refuses_a_group_larger_than_the_catalogue(toy, tmp_path):
    root, ckpt, _ = toy
    with pytest.raises(ValueError, match="group_size 64 > the 30 items"):
        run_rl(RLSettings(method="grpo", group_size=64), str(ckpt), str(tmp_path / "p.json"),
               str(root / "train.csv"), str(root / "index.json"), str(tmp_path / "out"))  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"method": "grpo", "rewards": {"bleu": 1.0}}, "bleu"),
        ({"method": "grpo", "group_size": 1}, "group_size must be >= 2"),
        ({"method": "grpo", "rollout": "greedy"}, "rollout"),
        ({"method": "grpo", "rewards": {"collaborative": 1.0}, "scorer": "gru4rec"}, "add baselines: {gru4rec"),
        ({"method": "grpo", "rewards": {"exact": 0}}, "not all 0"),
        ({"method": "grpo", "sync_ref_model": True, "beta": 0}, "sync_ref_model needs beta > 0"),
        ({"method": "grpo", "sync_ref_model": True, "mode": "lora"}, "sync_ref_model needs beta > 0 .* mode: full"),
        ({"method": "grpo", "rewards": {"reward_model": 1.0}}, "reward_model reward and the reward_model key"),
        ({"method": "grpo", "rewards": {"reward_model": 1.0}, "reward_model": "nope"}, r"reward_model: \['nope'\]"),
    ],
)
def test_rl_config_errors_are_named(entry, message):
    from conftest import REPO

    from genrec.config import load_config

    config = load_config(str(REPO / "config.yaml"))
    config["rl_variants"]["bad"] = entry
    config["baselines"].pop("gru4rec", None)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


@pytest.mark.slow
def test_two_process_grpo_under_accelerate(toy, tmp_path):
    """GRPO's multi-GPU path on CPU: accelerate starts two gloo DDP workers; only rank 0 writes outputs."""
    import subprocess

    from genrec.training.launch import cli_args, launch_command

    root, ckpt, _ = toy
    out = tmp_path / "rl"
    s = RLSettings(method="grpo", group_size=4, prompts_per_step=2, beta=0.04, learning_rate=1e-3, warmup_ratio=0.0)
    args = cli_args(
        s,
        sft_checkpoint=str(ckpt),
        policy_json=str(out / "policy.json"),
        train_csv=str(root / "train.csv"),
        sid_index=str(root / "index.json"),
        out_dir=str(out / "final_checkpoint"),
        threads=1,
    )
    cmd = launch_command("genrec.rl.run", 2, args, accelerate_config=two_cpu_processes(tmp_path / "cpu2.yaml"),
                         deepspeed_config=None)  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    log = json.loads((out / "rl_log.json").read_text())
    assert log["optimizer_steps"] == 4  # 16 rows / (2 prompts per step x 2 processes)
    policy = json.loads((out / "policy.json").read_text())
    before, _ = load_checkpoint(ckpt)
    after, _ = load_checkpoint(policy["checkpoint"])
    assert not torch.equal(before.get_input_embeddings().weight, after.get_input_embeddings().weight)
    assert not (out / ".rl_checkpoints").exists() and not (out / ".rl_reference").exists()
