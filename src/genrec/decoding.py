"""Constrained beam search over a SID index: the one decoder for evaluation, RL and recommend.

The index becomes a prefix tree stored in tensors (:class:`SIDTrie`): for every node, the
token ids of its children and the child node ids, padded. Decoding prefills each prompt once,
expands its KV cache to the beams, and at every SID level scores all (beam, allowed child)
pairs of the whole batch with one gather and one top-k; no Python loop over beams or tokens.
Decoding stops after exactly the SID length, and only SIDs present in the index can come out,
whatever the tokenizer: the search starts right after the prompt's last token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from genrec.prompts import sid_ids
from genrec.sids import format_sid

NEG_INF = float("-inf")


@dataclass
class SIDTrie:
    """A prefix tree of SID token-id sequences, in tensors.

    Node 0 is the root; node ``sink`` (the last) has no children and absorbs dead beams.
    """

    children: torch.Tensor  # (n_nodes, max_children) int64 token ids, -1 = none
    child_node: torch.Tensor  # (n_nodes, max_children) int64 node ids, sink where none
    leaf_item: torch.Tensor  # (n_nodes,) int64 item id at full depth, -1 elsewhere
    depth: int  # SID length (every SID of the index has it)
    item_sids: dict[int, str]  # item id -> SID string

    @property
    def sink(self) -> int:
        return self.children.shape[0] - 1

    @classmethod
    def from_index(cls, index: Mapping[int, Sequence[str]], tokenizer) -> SIDTrie:
        """Build the trie of an index with the (extended) tokenizer's ids.

        Raises:
            ValueError: SIDs of different lengths (not supported yet) or an empty index.
            KeyError: a SID token is missing from the tokenizer.
        """
        if not index:
            raise ValueError("empty SID index")
        lengths = {len(t) for t in index.values()}
        if len(lengths) != 1:
            raise ValueError(f"all SIDs must have one length for now, found lengths {sorted(lengths)}")
        kids: list[dict[int, int]] = [{}]
        leaf: dict[int, int] = {}
        sids = {}
        for item in sorted(index):
            sid = format_sid(index[item])
            sids[item] = sid
            node = 0
            for tok in sid_ids(tokenizer, sid):
                nxt = kids[node].get(tok)
                if nxt is None:
                    nxt = len(kids)
                    kids[node][tok] = nxt
                    kids.append({})
                node = nxt
            leaf[node] = item
        n = len(kids) + 1  # + sink
        width = max(len(k) for k in kids)
        children = torch.full((n, width), -1, dtype=torch.long)
        child_node = torch.full((n, width), n - 1, dtype=torch.long)
        for node, k in enumerate(kids):
            for j, (tok, nxt) in enumerate(sorted(k.items())):
                children[node, j] = tok
                child_node[node, j] = nxt
        leaf_item = torch.full((n,), -1, dtype=torch.long)
        for node, item in leaf.items():
            leaf_item[node] = item
        return cls(children, child_node, leaf_item, lengths.pop(), sids)

    def to(self, device: torch.device) -> SIDTrie:
        return SIDTrie(
            self.children.to(device), self.child_node.to(device), self.leaf_item.to(device), self.depth, self.item_sids
        )


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts into ``(B, T)`` ids and attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long, device=device)
        mask[r, width - len(p) :] = 1
    return ids, mask


@torch.no_grad()
def constrained_beam_search(
    model, prompts: Sequence[Sequence[int]], trie: SIDTrie, num_beams: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top SIDs per prompt by beam search restricted to the index.

    Args:
        model: a causal LM whose vocabulary holds the SID tokens.
        prompts: token ids per user (any lengths).
        trie: the index's trie on the model's device.
        num_beams: beams kept at every level; also the number of results per user.
        pad_id: the padding id.

    Returns:
        ``items`` ``(B, num_beams)`` int64 (-1 where the catalogue has fewer SIDs) and
        ``scores`` ``(B, num_beams)`` float32 sums of SID token log-probabilities, best first.
    """
    device = trie.children.device
    ids, mask = left_pad(prompts, pad_id, device)
    b = ids.shape[0]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) positions that ignore left padding
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache = out.cache
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B*W, V), W = 1 at first
    node = torch.zeros((b, 1), dtype=torch.long, device=device)  # (B, W)
    score = torch.zeros((b, 1), device=device)  # (B, W)
    last_pos = pos[:, -1:]  # (B, 1)
    width = trie.children.shape[1]
    for level in range(trie.depth):
        w = node.shape[1]
        cand_tok = trie.children[node]  # (B, W, C)
        cand_node = trie.child_node[node]  # (B, W, C)
        tok_logp = logp.view(b, w, -1).gather(-1, cand_tok.clamp(min=0))  # (B, W, C)
        cand = (score.unsqueeze(-1) + tok_logp).masked_fill(cand_tok < 0, NEG_INF).view(b, w * width)
        k = min(num_beams, w * width)
        score, flat = cand.topk(k, dim=-1)  # (B, k)
        src = flat // width  # beam each winner extends
        new_tok = cand_tok.view(b, -1).gather(1, flat)  # (B, k)
        node = cand_node.view(b, -1).gather(1, flat)
        node = node.masked_fill(score == NEG_INF, trie.sink)
        if level == trie.depth - 1:
            break
        rows = (torch.arange(b, device=device).unsqueeze(1) * w + src).view(-1)  # (B*k,) cache rows
        cache.reorder_cache(rows)
        mask = torch.cat([mask.index_select(0, rows), torch.ones((b * k, 1), dtype=mask.dtype, device=device)], 1)
        last_pos = last_pos.index_select(0, rows) + 1
        out = model(
            input_ids=new_tok.clamp(min=0).view(-1, 1),
            attention_mask=mask,
            position_ids=last_pos,
            cache=cache,
            use_cache=True,
        )
        cache = out.cache
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    items = trie.leaf_item[node]  # (B, k)
    items = items.masked_fill(score == NEG_INF, -1)
    if items.shape[1] < num_beams:  # catalogue smaller than the beam
        pad = num_beams - items.shape[1]
        items = torch.cat([items, items.new_full((b, pad), -1)], 1)
        score = torch.cat([score, score.new_full((b, pad), NEG_INF)], 1)
    return items, score


@torch.no_grad()
def score_all_items(model, prompt: Sequence[int], trie: SIDTrie, tokenizer) -> torch.Tensor:
    """Brute-force log-probability of every item's SID given one prompt (a test oracle).

    Returns:
        ``(n_items,)`` float32 scores in item-id order.
    """
    device = trie.children.device
    items = sorted(trie.item_sids)
    seqs = [list(prompt) + sid_ids(tokenizer, trie.item_sids[i]) for i in items]
    ids = torch.tensor(seqs, device=device)
    logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)  # (N, T, V)
    n = len(prompt)
    tgt = ids[:, n:]  # (N, depth)
    return logp[:, n - 1 : -1].gather(-1, tgt.unsqueeze(-1)).squeeze(-1).sum(-1)
