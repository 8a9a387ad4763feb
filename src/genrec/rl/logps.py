"""Log-probabilities of a group's completions with its shared prompt run once, and the trainer that uses them.

The rows of a GRPO group share their prompt, so :func:`shared_prompt_logps` runs each distinct
prompt once with its completions packed behind it under a block attention mask, instead of one
prompt + completion sequence per row. For G = 16 three-token SIDs after a 60-token prompt that is
108 tokens instead of 1,008 (``bench/rl_throughput.py`` measures it); the values are those of the
unpacked sequences (tested). :func:`sid_grpo_trainer` is TRL's ``GRPOTrainer`` with this scoring,
optionally restricted to the SID tokens the index allows at each level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from genrec.decoding import NEG_INF, SIDTrie, attention_mask_4d, custom_mask_attention


def trl_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, device=None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """GRPOTrainer's layout of rollouts: left-padded prompts, then right-padded completions.

    Returns:
        ``input_ids`` and ``attention_mask`` ``(B, P + K)``, and ``K``.
    """
    p, k = max(map(len, prompts)), max(map(len, completions))
    ids = torch.full((len(prompts), p + k), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for r, (a, c) in enumerate(zip(prompts, completions)):
        ids[r, p - len(a) : p] = torch.tensor(a)
        mask[r, p - len(a) : p] = 1
        ids[r, p : p + len(c)] = torch.tensor(c)
        mask[r, p : p + len(c)] = 1
    return ids, mask, k


def allowed_tokens(trie: SIDTrie, completions: torch.Tensor) -> torch.Tensor:
    """The SID tokens allowed at each position of each completion: ``(B, K, C)`` token ids, -1 where none.

    Position ``j`` of a completion may hold any child of the trie node its first ``j`` tokens lead to.
    Positions past a completion's end (padding) get whatever node the walk reaches; callers mask them.
    """
    b, k = completions.shape
    node = torch.zeros(b, dtype=torch.long, device=completions.device)
    out = []
    for j in range(k):
        kids = trie.children[node]  # (B, C)
        out.append(kids.masked_fill(kids < 0, -1))  # STAY (a finished shorter SID) is no token
        pick = (kids == completions[:, j : j + 1]).float().argmax(-1, keepdim=True)
        node = trie.child_node[node].gather(1, pick).squeeze(1)
    return torch.stack(out, 1)


def shared_prompt_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    compute_entropy: bool = False,
    trie: SIDTrie | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities of the completions, running each distinct prompt once.

    Args:
        model: the causal LM (sdpa or eager attention).
        input_ids: ``(B, P + K)``: left-padded prompts, then right-padded completions of width K.
        attention_mask: ``(B, P + K)``, 0 on padding.
        logits_to_keep: ``K``.
        compute_entropy: also return each completion position's entropy.
        trie: score under the policy restricted to the index: at each position, the softmax over the
            SID tokens the trie allows there (the distribution the rollouts were drawn from). ``None``:
            the softmax over the whole vocabulary.

    Rows with the same prompt are packed into one sequence: the prompt, then each row's completion
    in its own slot. A completion token attends to the prompt and to the earlier tokens of its own
    slot, at the positions it has in prompt + completion; the prompt's last position predicts the
    first token of every slot. The result equals running each row on its own (tested), for one
    prompt per group instead of one per row.

    Returns:
        ``logps`` ``(B, K)`` and ``entropies`` ``(B, K)`` or ``None``.
    """
    attn = custom_mask_attention(getattr(model, "module", model), "shared-prompt scoring")  # DDP wraps the model
    device = input_ids.device
    k = logits_to_keep
    p = input_ids.shape[1] - k
    prompt, pmask = input_ids[:, :p], attention_mask[:, :p]
    comp, cmask = input_ids[:, p:], attention_mask[:, p:]
    keys, inv = torch.unique(prompt.masked_fill(pmask == 0, -1), dim=0, return_inverse=True)
    u = keys.shape[0]
    counts = torch.bincount(inv, minlength=u)
    m = int(counts.max())
    order = torch.argsort(inv, stable=True)
    first = torch.cumsum(counts, 0) - counts  # first sorted row of each prompt
    slot = torch.empty_like(inv)
    slot[order] = torch.arange(len(inv), device=device) - first[inv[order]]
    rep = torch.zeros(u, dtype=torch.long, device=device)
    rep[inv] = torch.arange(len(inv), device=device)  # a row of each prompt
    width = p + m * k
    ids = torch.full((u, width), 0, dtype=input_ids.dtype, device=device)
    ids[:, :p] = prompt[rep]
    cols = p + slot.unsqueeze(1) * k + torch.arange(k, device=device)  # (B, K) packed columns of each row
    ids[inv.unsqueeze(1), cols] = comp
    pm = pmask[rep].bool()  # (U, P)
    n = pm.sum(1)  # prompt lengths
    pos = torch.zeros((u, width), dtype=torch.long, device=device)
    pos[:, :p] = (pm.cumsum(1) - 1).clamp(min=0)
    pos[:, p:] = (n.unsqueeze(1) + torch.arange(k, device=device).repeat(m)).clamp(min=0)
    allowed = torch.zeros((u, width, width), dtype=torch.bool, device=device)
    causal = torch.ones((p, p), dtype=torch.bool, device=device).tril()
    allowed[:, :p, :p] = causal & pm.unsqueeze(1)
    allowed[:, p:, :p] = pm.unsqueeze(1)
    block = torch.block_diag(*[torch.ones((k, k), dtype=torch.bool, device=device).tril()] * m)
    allowed[:, p:, p:] = block
    allowed |= torch.eye(width, dtype=torch.bool, device=device)  # padding attends to itself (no empty rows)
    mask4 = attention_mask_4d(allowed, attn, next(model.parameters()).dtype)
    out = model(input_ids=ids, attention_mask=mask4, position_ids=pos, logits_to_keep=m * k + 1, use_cache=False)
    logits = out.logits  # (U, 1 + m*K, V): the prompt's last position, then every slot's tokens
    at = torch.zeros((len(inv), k), dtype=torch.long, device=device)  # (B, K) kept position predicting token j
    at[:, 1:] = 1 + slot.unsqueeze(1) * k + torch.arange(k - 1, device=device)
    row_logits = logits[inv.unsqueeze(1), at].float()  # (B, K, V)
    if trie is None:
        row_logp = torch.log_softmax(row_logits, dim=-1)  # (B, K, V)
        logps = row_logp.gather(-1, comp.unsqueeze(-1)).squeeze(-1) * cmask
        entropies = -(row_logp.exp() * row_logp).sum(-1) * cmask if compute_entropy else None
        return logps, entropies
    allowed = allowed_tokens(trie, comp.masked_fill(cmask == 0, -1))  # (B, K, C)
    sub = row_logits.gather(-1, allowed.clamp(min=0)).masked_fill(allowed < 0, NEG_INF)  # (B, K, C)
    sub = sub.masked_fill((cmask == 0).unsqueeze(-1), 0.0)  # padding: any finite row
    sub_logp = torch.log_softmax(sub, dim=-1)
    chosen = (allowed == comp.unsqueeze(-1)).float().argmax(-1, keepdim=True)  # (B, K, 1)
    logps = sub_logp.gather(-1, chosen).squeeze(-1) * cmask
    entropies = None
    if compute_entropy:
        p = sub_logp.exp()
        entropies = -(p * sub_logp.masked_fill(p == 0, 0.0)).sum(-1) * cmask
    return logps, entropies


def sid_grpo_trainer():
    """TRL's ``GRPOTrainer`` subclass that scores with :func:`shared_prompt_logps` (imported lazily: TRL is heavy)."""
    from trl import GRPOTrainer

    class SIDGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose log-probabilities run each group's shared prompt once (:func:`shared_prompt_logps`).

        ``sid_trie``: when set, the policy (and the reference) are scored restricted to the index.
        """

        sid_trie: SIDTrie | None = None

        def _get_train_sampler(self, dataset=None):
            return EpochReplaySampler(super()._get_train_sampler(dataset))

        def _get_per_token_logps_and_entropies(
            self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False,
            compute_aux_loss=False, **multimodal,
        ):  # fmt: skip
            if any(v is not None for v in multimodal.values()) or compute_aux_loss:
                raise ValueError("SID GRPO takes text prompts only (no images, no MoE auxiliary loss)")
            trie = self.sid_trie
            if trie is not None and trie.children.device != input_ids.device:
                trie = self.sid_trie = trie.to(input_ids.device)
            with self.accelerator.autocast():
                logps, entropies = shared_prompt_logps(
                    model, input_ids, attention_mask, logits_to_keep, compute_entropy, trie
                )
            return logps, entropies, None

    return SIDGRPOTrainer


class EpochReplaySampler(torch.utils.data.Sampler):
    """TRL's RepeatSampler, re-seeded at each epoch so that a resumed run draws that epoch's order again.

    RepeatSampler shuffles with one generator seeded once, so epoch ``e``'s order is its ``e``-th draw;
    a run resumed in epoch ``e`` starts a new sampler and would draw epoch 0's order. ``set_epoch``
    (which the Trainer calls at each epoch's start) re-seeds it and replays the earlier draws first.
    """

    def __init__(self, inner):
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        if self.inner.shuffle and self.inner.seed is not None:
            self.inner.generator.manual_seed(self.inner.seed)
            for _ in range(epoch):
                torch.randperm(self.inner.num_samples, generator=self.inner.generator)

    def __iter__(self):
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)
