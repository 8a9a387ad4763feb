"""GRPO rewards over groups of SID rollouts: a registry with one function per kind, combined with weights.

A group is what the constrained decoder returns for one prompt: distinct candidate items, best
first (beam order; for sampled groups, sorted by the policy's log-probability), plus the target
item carried with the sample itself (never looked up by prompt text, so two users with the same
history keep their own targets). Every reward maps a group to one float per candidate:

* ``exact``: 1 for the target, 0 otherwise (MiniOneRec's ``rule``).
* ``ranking``: MiniOneRec's ``ranking_only``: when the group holds the target, the wrong candidate
  at position i gets ``-(1/log2(i+2)) / sum_j 1/log2(j+2)`` (a confident wrong answer costs most),
  the target 0; a group without the target gets 0 everywhere. Its ``ranking`` reward is
  ``{"exact": 1, "ranking": 1}`` here.
* ``prefix``: partial credit per matched SID level, ``k / L`` for the first ``k`` of the target's
  ``L`` levels matched in order (1 for the target itself).
* ``collaborative``: the probability that a trained SASRec/GRU4Rec scorer (:mod:`genrec.seqrec`)
  gives the candidate after the user's history, a softmax over the whole catalogue.
* ``reward_model``: a trained reward model's score (:class:`genrec.llm.reward.RewardScorer`) of the
  candidate's SID as the answer to the user's next-item prompt (the prompts module's text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Group:
    """One prompt's rollouts and what its rewards need."""

    items: Sequence[int]  # distinct candidate item ids, best first
    target: int  # the sample's own target item
    history: Sequence[int]  # the user's history (item ids, oldest first)


@dataclass
class RewardContext:
    """What some rewards need beyond the group: the SID index and an optional collaborative scorer."""

    index: Mapping[int, Sequence[str]]  # item id -> SID level tokens
    scorer: torch.nn.Module | None = None  # genrec.seqrec.load_scorer(...)
    reward_model: Any = None  # genrec.llm.reward.RewardScorer(...)


def exact(group: Group, ctx: RewardContext) -> list[float]:
    """1 for the target, 0 for every other candidate.

    >>> exact(Group([4, 7, 9], target=7, history=[]), RewardContext({}))
    [0.0, 1.0, 0.0]
    """
    return [float(i == group.target) for i in group.items]


def ranking(group: Group, ctx: RewardContext) -> list[float]:
    """Negatives penalised by their rank in the group, only when the group holds the target.

    >>> [round(r, 3) for r in ranking(Group([4, 7, 9], target=7, history=[]), RewardContext({}))]
    [-0.469, 0.0, -0.235]
    >>> ranking(Group([4, 9], target=7, history=[]), RewardContext({}))
    [0.0, 0.0]
    """
    if group.target not in group.items:
        return [0.0] * len(group.items)
    weights = [1.0 / math.log2(i + 2) for i in range(len(group.items))]
    total = sum(weights)
    return [0.0 if item == group.target else -w / total for item, w in zip(group.items, weights)]


def prefix(group: Group, ctx: RewardContext) -> list[float]:
    """Share of the target's SID levels matched from the first level on.

    >>> idx = {1: ["<a_1>", "<b_2>", "<c_3>"], 2: ["<a_1>", "<b_2>", "<c_4>"]}
    >>> idx |= {3: ["<a_1>", "<b_5>", "<c_3>"], 4: ["<a_9>", "<b_2>", "<c_3>"]}
    >>> prefix(Group([1, 2, 3, 4], target=1, history=[]), RewardContext(idx))
    [1.0, 0.6666666666666666, 0.3333333333333333, 0.0]
    """
    want = list(ctx.index[group.target])
    out = []
    for item in group.items:
        got, k = list(ctx.index[item]), 0
        while k < min(len(got), len(want)) and got[k] == want[k]:
            k += 1
        out.append(k / len(want))
    return out


@torch.no_grad()
def collaborative(group: Group, ctx: RewardContext) -> list[float]:
    """The scorer's probability of each candidate after the user's history (softmax over the catalogue).

    Raises:
        ValueError: no scorer in the context.
    """
    from genrec.baselines.seqrec import encode_histories

    if ctx.scorer is None:
        raise ValueError("the collaborative reward needs a trained scorer (baselines: sasrec) in the reward context")
    n_items = ctx.scorer.n_items
    probs = torch.softmax(ctx.scorer(encode_histories([group.history], n_items, ctx.scorer.max_len))[0], dim=-1)
    return probs[torch.tensor(list(group.items))].tolist()


def reward_model(group: Group, ctx: RewardContext) -> list[float]:
    """The reward model's score of each candidate SID as the answer to the user's next-item prompt.

    Raises:
        ValueError: no reward model in the context.
    """
    from genrec.prompts import SYSTEM, next_item_text
    from genrec.sids.format import format_sid

    if ctx.reward_model is None:
        raise ValueError("the reward_model reward needs a trained reward model (rl_variants.*.reward_model)")
    user = next_item_text([format_sid(ctx.index[i]) for i in group.history])
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return ctx.reward_model.score([prompt] * len(group.items), [format_sid(ctx.index[i]) for i in group.items])


REWARDS: dict[str, Callable[[Group, RewardContext], list[float]]] = {
    "exact": exact,
    "ranking": ranking,
    "prefix": prefix,
    "collaborative": collaborative,
    "reward_model": reward_model,
}


def combined_rewards(
    weights: Mapping[str, float], group: Group, ctx: RewardContext
) -> tuple[list[float], dict[str, list[float]]]:
    """The weighted sum of the named rewards, and each kind's values (for logging per kind).

    >>> group = Group([4, 7], target=7, history=[])
    >>> total, parts = combined_rewards({"exact": 1.0, "ranking": 1.0}, group, RewardContext({}))
    >>> [round(t, 3) for t in total], sorted(parts)
    ([-0.613, 1.0], ['exact', 'ranking'])

    Raises:
        ValueError: an unknown reward name, or no reward at all.
    """
    unknown = [k for k in weights if k not in REWARDS]
    if unknown or not weights:
        raise ValueError(f"unknown reward(s) {unknown}; choose from {sorted(REWARDS)}" if unknown else "no reward")
    parts = {name: REWARDS[name](group, ctx) for name in weights}
    total = [sum(weights[name] * parts[name][i] for name in weights) for i in range(len(group.items))]
    return total, parts
