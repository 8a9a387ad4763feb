import math

import pytest
import torch

from genrec.baselines.seqrec import build_model
from genrec.rl.rewards import REWARDS, Group, RewardContext, collaborative, combined_rewards, ranking
from genrec.settings import SeqRecSettings

INDEX = {i: [f"<a_{i // 4}>", f"<b_{i // 2 % 2}>", f"<c_{i % 2}>"] for i in range(8)}


def test_ranking_reward_matches_minionerec_for_a_group_of_16():
    group = Group(list(range(16)), target=15, history=[])
    r = ranking(group, RewardContext(INDEX))
    norm = sum(1 / math.log2(j + 2) for j in range(16))
    assert r[15] == 0 and r[0] == pytest.approx(-1 / norm) == pytest.approx(-0.164, abs=1e-3)
    assert r[1] == pytest.approx(-0.103, abs=1e-3) and all(a < b for a, b in zip(r[:14], r[1:15]))


class _PrefersOne:
    """A stand-in reward model (genrec.llm.reward.RewardScorer's interface) that prefers one answer."""

    def __init__(self, answer: str):
        self.answer, self.prompts = answer, []

    def score(self, prompts, answers):
        self.prompts += prompts
        return [float(a == self.answer) for a in answers]


def test_every_reward_gives_one_value_per_candidate_and_the_target_the_best():
    from genrec.sids.format import format_sid

    torch.manual_seed(0)
    scorer = build_model("sasrec", len(INDEX), SeqRecSettings()).eval()
    ctx = RewardContext(INDEX, scorer=scorer, reward_model=_PrefersOne(format_sid(INDEX[5])))
    group = Group([3, 5, 2, 4], target=5, history=[1, 2])
    for name, fn in REWARDS.items():
        values = fn(group, ctx)
        assert len(values) == 4, name
        if name != "collaborative":  # the scorer is untrained: no preference to check
            assert values[1] == max(values), name
    # the reward model reads the user's next-item prompt, the history's SIDs in order
    user = ctx.reward_model.prompts[0][-1]["content"]
    assert format_sid(INDEX[1]) in user and user.index(format_sid(INDEX[1])) < user.index(format_sid(INDEX[2]))
    with pytest.raises(ValueError, match="needs a trained reward model"):
        REWARDS["reward_model"](group, RewardContext(INDEX))
    probs = collaborative(group, ctx)
    full = torch.softmax(scorer(torch.tensor([[8] * 8 + [1, 2]]))[0], -1)
    assert probs == pytest.approx(full[[3, 5, 2, 4]].tolist())


def test_rewards_use_the_group_target_not_the_prompt():
    """Two users with the same history (same prompt) but different targets keep their own rewards."""
    a = Group([1, 2, 3], target=2, history=[0, 4])
    b = Group([1, 2, 3], target=3, history=[0, 4])
    ctx = RewardContext(INDEX)
    assert combined_rewards({"exact": 1.0}, a, ctx)[0] == [0.0, 1.0, 0.0]
    assert combined_rewards({"exact": 1.0}, b, ctx)[0] == [0.0, 0.0, 1.0]


def test_combination_and_errors():
    ctx = RewardContext(INDEX)
    group = Group([0, 1, 6], target=1, history=[])
    total, parts = combined_rewards({"exact": 2.0, "prefix": 0.5}, group, ctx)
    assert total == pytest.approx([2 * e + 0.5 * p for e, p in zip(parts["exact"], parts["prefix"])])
    assert parts["prefix"] == pytest.approx([2 / 3, 1.0, 0.0])
    with pytest.raises(ValueError, match="unknown reward"):
        combined_rewards({"bleu": 1.0}, group, ctx)
    with pytest.raises(ValueError, match="needs a trained scorer"):
        combined_rewards({"collaborative": 1.0}, group, ctx)


def test_collaborative_reward_reads_histories_at_the_scorer_length():
    torch.manual_seed(0)
    scorer = build_model("gru4rec", len(INDEX), SeqRecSettings(max_len=3)).eval()
    values = collaborative(Group([1, 2], target=2, history=[0, 1, 2, 3, 4]), RewardContext(INDEX, scorer=scorer))
    full = torch.softmax(scorer(torch.tensor([[2, 3, 4]]))[0], -1)
    assert values == pytest.approx(full[[1, 2]].tolist())


def test_the_settings_name_every_reward_kind():
    from genrec.settings import RL_REWARDS

    assert tuple(REWARDS) == RL_REWARDS
