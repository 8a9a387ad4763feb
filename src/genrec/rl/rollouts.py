"""GRPO's rollouts: each prompt's group of distinct SIDs, from the constrained decoder evaluation uses.

TRL's ``GRPOTrainer`` asks its ``rollout_func`` (:class:`Rollouts`) for completions; one decode per
prompt gives its group of ``group_size`` *distinct* SIDs of the index, by beam search (MiniOneRec's
choice) or by stochastic beam search, a sample without replacement at a temperature. Every rollout
is a valid SID, whatever the generation config.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch

from genrec.decoding import SIDTrie, constrained_beam_search
from genrec.settings import RLSettings


def rollout_groups(
    model, prompts: Sequence[Sequence[int]], trie: SIDTrie, settings: RLSettings, pad_id: int, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt's group: ``group_size`` distinct SIDs of the index, best first.

    ``beam``: the group_size best SIDs by constrained beam search. ``sample``: a sample without
    replacement at ``temperature`` (stochastic beam search), then sorted by the policy's
    log-probability, so that the ranking reward's positions mean the same thing in both modes.

    Returns:
        ``items`` ``(B, G)`` and ``scores`` ``(B, G)``, the untempered SID log-probabilities.
    """
    temperature = settings.temperature if settings.rollout == "sample" else None
    items, scores = constrained_beam_search(model, prompts, trie, settings.group_size, pad_id, temperature, generator)
    if temperature is not None:
        scores, order = scores.sort(dim=1, descending=True)
        items = items.gather(1, order)
    return items, scores


class Rollouts:
    """TRL's ``rollout_func``: the constrained decoder for each group of identical prompts in a batch.

    TRL repeats every dataset row ``group_size`` times in a row; the prompt of each run of copies is
    decoded once and its group spread over the copies. ``seconds`` accumulates decoding time (read
    and reset by :class:`_StepTimer`).
    """

    def __init__(
        self,
        prompt_of: Mapping[str, list[int]],
        completion: Mapping[int, list[int]],
        trie: SIDTrie,
        settings: RLSettings,
        pad_id: int,
        seed: int,
    ):
        self.prompt_of = prompt_of  # prompt text (the dataset's prompt column) -> token ids
        self.completion = completion  # item -> SID token ids
        self.trie = trie
        self.settings = settings
        self.pad_id = pad_id
        self.generator = torch.Generator().manual_seed(seed)
        self.seconds = 0.0

    def __call__(self, prompts: list[str], trainer) -> dict[str, list]:
        g = self.settings.group_size
        if len(prompts) % g or any(prompts[i] != prompts[i - i % g] for i in range(len(prompts))):
            raise RuntimeError(f"a rollout batch of {len(prompts)} prompts is not whole groups of {g} copies")
        ids = [self.prompt_of[p] for p in prompts[::g]]
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        if self.trie.children.device != model.device:
            self.trie = self.trie.to(model.device)
        with torch.no_grad():
            items, scores = rollout_groups(model, ids, self.trie, self.settings, self.pad_id, self.generator)
        self.seconds += time.perf_counter() - start
        model.train(was_training)
        if (items < 0).any():
            raise RuntimeError(f"the index has fewer than group_size={g} SIDs; lower group_size")
        flat = items.view(-1).tolist()
        return {
            "prompt_ids": [ids[i // g] for i in range(len(flat))],
            "completion_ids": [self.completion[i] for i in flat],
            "logprobs": None,  # TRL needs these only to correct vLLM sampling; rollouts here are the policy's own
            "item": flat,
            "rollout_logp": scores.view(-1).tolist(),
        }
