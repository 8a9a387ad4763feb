"""Decoding over a SID index: the one decoder for evaluation, recommend and GRPO rollouts.

The index becomes a prefix tree stored in tensors (:class:`SIDTrie`): for every node, the
token ids of its children and the child node ids, padded. Two modes:

* :func:`constrained_beam_search` prefills each prompt once, expands its KV cache to the beams,
  and at every SID level scores all (beam, allowed child) pairs of the whole batch with one
  gather and one top-k; no Python loop over beams or tokens. It stops after exactly the SID
  length (the longest, when lengths differ), and only SIDs of the index can come out, whatever
  the tokenizer or generation config: the search starts right after the prompt's last token.
  With a ``temperature`` it is stochastic beam search: distinct SIDs sampled without replacement
  (GRPO's ``sample`` rollouts).
* :func:`score_catalogue` scores every item's SID exactly: one prefill, then one token per
  distinct SID prefix under a tree-shaped attention mask. It is the ranking that beam search
  approximates, at a cost that grows with the number of prefixes rather than of items.

:func:`rank` runs either mode over any number of prompts in memory-sized batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from tqdm.auto import tqdm

from genrec.prompts import sid_ids
from genrec.settings import EvalSettings
from genrec.sids.format import format_sid

log = logging.getLogger(__name__)
_EVAL = EvalSettings()  # the decoding options' defaults live there, once

NEG_INF = float("-inf")
STAY = -2  # the child of a finished SID shorter than the longest: keep the beam, add log-prob 0


@dataclass
class SIDTrie:
    """A prefix tree of SID token-id sequences, in tensors.

    Node 0 is the root; node ``sink`` (the last) has no children and absorbs dead beams. SIDs may
    differ in length as long as none is a prefix of another (the token sequence must say where a
    SID ends); a leaf shallower than ``depth`` has the single child :data:`STAY` (itself, log-prob 0),
    so that a finished short SID keeps its beam and score while longer ones are still decoded.
    """

    children: torch.Tensor  # (n_nodes, max_children) int64 token ids; -1 = none, STAY = finished
    child_node: torch.Tensor  # (n_nodes, max_children) int64 node ids, sink where none
    leaf_item: torch.Tensor  # (n_nodes,) int64 item id at a leaf, -1 elsewhere
    node_token: torch.Tensor  # (n_nodes,) int64 token on the edge into the node, -1 for root and sink
    node_depth: torch.Tensor  # (n_nodes,) int64 number of SID tokens from the root
    item_node: torch.Tensor  # (n_items,) int64 leaf node of each item, in ``items`` order
    items: list[int]  # item ids, sorted
    depth: int  # length of the longest SID
    item_sids: dict[int, str]  # item id -> SID string

    @property
    def sink(self) -> int:
        return self.children.shape[0] - 1

    @property
    def inner_mask(self) -> torch.Tensor:
        """``(n_nodes,)`` bool: nodes below the root that have children (the prefixes exact scoring runs)."""
        return (self.node_depth >= 1) & (self.leaf_item < 0) & (self.node_token >= 0)

    @property
    def mixed_lengths(self) -> bool:
        """Whether some SID is shorter than the longest."""
        return bool(((self.leaf_item >= 0) & (self.node_depth < self.depth)).any())

    @property
    def n_inner(self) -> int:
        return int(self.inner_mask.sum())

    @classmethod
    def from_index(cls, index: Mapping[int, Sequence[str]], tokenizer) -> SIDTrie:
        """Build the trie of an index with the (extended) tokenizer's ids.

        Raises:
            ValueError: an empty index, or a SID that is a prefix of another (or a duplicate).
            KeyError: a SID token is missing from the tokenizer.
        """
        if not index:
            raise ValueError("empty SID index")
        kids: list[dict[int, int]] = [{}]
        token = [-1]
        depth = [0]
        leaf: dict[int, int] = {}
        owner: dict[int, int] = {}  # node -> an item whose SID passes through it (for error messages)
        sids = {}
        items = sorted(index)
        for item in items:
            sid = format_sid(index[item])
            sids[item] = sid
            node = 0
            for tok in sid_ids(tokenizer, sid):
                if node in leaf:
                    raise ValueError(
                        f"SID {sids[leaf[node]]} (item {leaf[node]}) is a prefix of {sid} (item {item}): "
                        "decoding could not tell where a SID ends"
                    )
                nxt = kids[node].get(tok)
                if nxt is None:
                    nxt = len(kids)
                    kids[node][tok] = nxt
                    kids.append({})
                    token.append(tok)
                    depth.append(depth[node] + 1)
                owner.setdefault(nxt, item)
                node = nxt
            if kids[node] or node in leaf:
                other = leaf.get(node, owner[node])
                raise ValueError(
                    f"SID {sid} (item {item}) is a prefix of, or equal to, {sids[other]} (item {other}): "
                    "decoding could not tell them apart"
                )
            leaf[node] = item
        n = len(kids) + 1  # + sink
        longest = max(depth)
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
            if depth[node] < longest:
                children[node, 0], child_node[node, 0] = STAY, node
        node_of = {item: node for node, item in leaf.items()}
        return cls(
            children=children,
            child_node=child_node,
            leaf_item=leaf_item,
            node_token=torch.tensor([*token, -1]),
            node_depth=torch.tensor([*depth, 0]),
            item_node=torch.tensor([node_of[i] for i in items]),
            items=items,
            depth=longest,
            item_sids=sids,
        )

    def to(self, device: torch.device) -> SIDTrie:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return SIDTrie(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in moved.items()})


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts into ``(B, T)`` ids and attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long, device=device)
        mask[r, width - len(p) :] = 1
    return ids, mask


def _prefill(model, prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    """Run the left-padded prompts once with a KV cache.

    Returns:
        ``mask`` ``(B, T)``, ``pos`` ``(B, T)`` positions that ignore left padding, and the model output
        (logits of the last position only, and the cache).
    """
    ids, mask = left_pad(prompts, pad_id, device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return mask, pos, model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)


def _last_logp(out) -> torch.Tensor:
    """``(R, V)`` float32 log-probabilities of the next token after each row's last position."""
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1)


def _extend(model, tokens: torch.Tensor, mask: torch.Tensor, last_pos: torch.Tensor, cache):
    """Feed one new token per row (``tokens`` ``(R, 1)``; STAY and dead rows feed token 0).

    Returns:
        The mask and positions grown by one, and the model output.
    """
    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    last_pos = last_pos + 1
    out = model(input_ids=tokens.clamp(min=0), attention_mask=mask, position_ids=last_pos, cache=cache, use_cache=True)
    return mask, last_pos, out


def _child_logp(logp: torch.Tensor, cand_tok: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of candidate child tokens ``(..., C)`` from ``logp`` ``(..., V)``; STAY costs 0.

    Entries of absent children (-1) are meaningless: callers mask them.
    """
    return logp.gather(-1, cand_tok.clamp(min=0)).masked_fill(cand_tok == STAY, 0.0)


def _gumbel(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise, drawn on CPU (so a seeded generator gives the same draws on any device)."""
    u = torch.rand(shape, generator=generator).clamp_(1e-20, 1 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


def _conditioned_gumbel(parent: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gumbel keys ``g`` ``(..., C)`` shifted so that their maximum equals the parent's key ``(..., 1)``.

    Stochastic beam search (Kool, van Hoof and Welling, 2019, eq. 23, in its stable form): a child's
    key is a Gumbel of its log-probability conditioned on the largest child key being the parent's.
    """
    z = g.max(-1, keepdim=True).values
    x = g - z  # <= 0
    log1mexp = torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
    v = parent - g + log1mexp
    return parent - torch.relu(v) - torch.log1p(torch.exp(-v.abs()))


@torch.no_grad()
def constrained_beam_search(
    model,
    prompts: Sequence[Sequence[int]],
    trie: SIDTrie,
    num_beams: int,
    pad_id: int,
    temperature: float | None = None,
    generator: torch.Generator | None = None,
    eos_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top SIDs per prompt by beam search restricted to the index, or (``temperature``) distinct samples.

    Ties are broken by a fixed rule (a stable sort where Hugging Face uses ``torch.topk``, whose order
    among equal values is unspecified): among candidates of equal score, the one extending the
    better-ranked beam wins, then the smaller token id. With every score tied, the result is the
    first ``num_beams`` SIDs in token order.

    Args:
        model: a causal LM whose vocabulary holds the SID tokens.
        prompts: token ids per user (any lengths).
        trie: the index's trie on the model's device.
        num_beams: beams kept at every level; also the number of results per user.
        pad_id: the padding id.
        temperature: ``None`` for beam search. A number makes it stochastic beam search: every
            candidate is ranked by a Gumbel-perturbed key of its log-probability, conditioned on its
            parent's key, so the ``num_beams`` results are a sample *without replacement* from the
            constrained model at that temperature (at each level, the softmax of the allowed
            children's log-probabilities divided by ``temperature``, as masked sampling draws).
            These are GRPO's ``sample`` rollouts: a group of distinct SIDs. Results come in key order.
        generator: the random source of the Gumbel noise (stochastic mode only).
        eos_id: also score the end-of-response token after each final beam and rank by the sum, as
            MiniOneRec's evaluation does (its beam search generates the EOS too, with no length
            penalty). The beams kept are the same; only their order and scores change. Needs SIDs of
            one length.

    Returns:
        ``items`` ``(B, num_beams)`` int64 (-1 where the catalogue has fewer SIDs) and
        ``scores`` ``(B, num_beams)`` float32 sums of SID token log-probabilities (plus the EOS's
        with ``eos_id``) under the untempered model; best first in beam search.

    Raises:
        ValueError: ``temperature`` <= 0, or ``eos_id`` with SIDs of different lengths or sampling.
    """
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if eos_id is not None and (temperature is not None or trie.mixed_lengths):
        raise ValueError("scoring the EOS needs beam search over SIDs of one length")
    stochastic = temperature is not None
    device = trie.children.device
    mask, pos, out = _prefill(model, prompts, pad_id, device)
    b = mask.shape[0]
    cache = out.cache
    logp = _last_logp(out)  # (B*W, V), W = 1 at first
    node = torch.zeros((b, 1), dtype=torch.long, device=device)  # (B, W)
    score = torch.zeros((b, 1), device=device)  # (B, W)
    if stochastic:
        phi = torch.zeros((b, 1), device=device)  # tempered log-probability of each beam's prefix
        key = _gumbel((b, 1), generator, device)  # its perturbed key; the root's is a plain Gumbel
    last_pos = pos[:, -1:]  # (B, 1)
    width = trie.children.shape[1]
    for level in range(trie.depth):
        w = node.shape[1]
        cand_tok = trie.children[node]  # (B, W, C)
        cand_node = trie.child_node[node]  # (B, W, C)
        absent = cand_tok == -1
        tok_logp = _child_logp(logp.view(b, w, -1), cand_tok)  # (B, W, C)
        cand = (score.unsqueeze(-1) + tok_logp).masked_fill(absent, NEG_INF).view(b, w * width)  # (B, W*C)
        if stochastic:
            # the sampled distribution: at each level, the allowed children's tempered softmax
            step = torch.log_softmax((tok_logp / temperature).masked_fill(absent, NEG_INF), dim=-1)
            cand_phi = (phi.unsqueeze(-1) + step).masked_fill(absent, NEG_INF)
            g = cand_phi + _gumbel(tuple(cand_phi.shape), generator, device)
            ranked = _conditioned_gumbel(key.unsqueeze(-1), g).masked_fill(absent, NEG_INF)
            ranked = torch.nan_to_num(ranked, nan=NEG_INF).view(b, w * width)
        else:
            ranked = cand
        k = min(num_beams, w * width)
        top, flat = (t[:, :k] for t in ranked.sort(dim=-1, descending=True, stable=True))  # (B, k): the tie rule
        score = cand.gather(1, flat)
        if stochastic:
            key, phi = top, cand_phi.view(b, -1).gather(1, flat)
        src = flat // width  # beam each winner extends
        new_tok = cand_tok.view(b, -1).gather(1, flat)  # (B, k)
        node = cand_node.view(b, -1).gather(1, flat)
        node = node.masked_fill(score == NEG_INF, trie.sink)
        if level == trie.depth - 1 and eos_id is None:
            break
        rows = (torch.arange(b, device=device).unsqueeze(1) * w + src).view(-1)  # (B*k,) cache rows
        cache.reorder_cache(rows)
        mask, last_pos, out = _extend(
            model, new_tok.view(-1, 1), mask.index_select(0, rows), last_pos.index_select(0, rows), cache
        )
        cache = out.cache
        logp = _last_logp(out)
        if level == trie.depth - 1:  # eos_id: add each final beam's EOS log-probability and re-rank
            score = score + logp.view(b, k, -1)[..., eos_id]
            score, order = score.sort(dim=-1, descending=True, stable=True)
            node = node.gather(1, order)
    items = trie.leaf_item[node]  # (B, k)
    items = items.masked_fill(score == NEG_INF, -1)
    if items.shape[1] < num_beams:  # catalogue smaller than the beam
        pad = num_beams - items.shape[1]
        items = torch.cat([items, items.new_full((b, pad), -1)], 1)
        score = torch.cat([score, score.new_full((b, pad), NEG_INF)], 1)
    return items, score


@torch.no_grad()
def score_all_items(model, prompt: Sequence[int], trie: SIDTrie, tokenizer) -> torch.Tensor:
    """Brute-force log-probability of every item's SID given one prompt, one full sequence each (a test oracle).

    Returns:
        ``(n_items,)`` float32 scores in ``trie.items`` order.
    """
    device = trie.children.device
    n = len(prompt)
    out = torch.empty(len(trie.items), device=device)
    for r, item in enumerate(trie.items):
        ids = torch.tensor([list(prompt) + sid_ids(tokenizer, trie.item_sids[item])], device=device)
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]  # (T, V)
        out[r] = logp[n - 1 : -1].gather(-1, ids[0, n:].unsqueeze(-1)).sum()
    return out


def custom_mask_attention(model, what: str) -> str:
    """The model's attention implementation, checked to take a custom (tree or block) mask.

    Raises:
        ValueError: it is neither sdpa nor eager; ``what`` names the caller in the message.
    """
    attn = getattr(model.config, "_attn_implementation", "eager")
    if attn not in ("sdpa", "eager"):
        raise ValueError(f"{what} needs a custom attention mask: load the model with sdpa or eager, not {attn}")
    return attn


def attention_mask_4d(allowed: torch.Tensor, attn: str, dtype: torch.dtype) -> torch.Tensor:
    """A ``(B, Q, K)`` may-attend mask as the model takes it: ``(B, 1, Q, K)``, boolean for sdpa, additive for eager."""
    if attn == "sdpa":
        return allowed.unsqueeze(1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def _tree_layout(trie: SIDTrie) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inner nodes in breadth-first order, the slots of their ancestors, and every node's parent.

    Returns:
        ``inner`` ``(n_inner,)`` node ids sorted by depth; ``anc`` ``(n_inner, depth - 1)`` where
        ``anc[j, d - 1]`` is the position in ``inner`` of node j's ancestor at depth ``d`` (itself at its
        own depth; -1 deeper than the node); ``parent`` ``(n_nodes,)`` (0 for the root and the sink).
    """
    n = trie.children.shape[0]
    device = trie.children.device
    is_inner = trie.inner_mask
    ids = torch.arange(n, device=device)
    inner = ids[is_inner][trie.node_depth[is_inner].argsort(stable=True)]
    slot = torch.full((n,), -1, dtype=torch.long, device=device)
    slot[inner] = torch.arange(len(inner), device=device)
    parent = torch.zeros(n, dtype=torch.long, device=device)
    real = trie.children >= 0
    parent[trie.child_node[real]] = ids.unsqueeze(1).expand_as(real)[real]
    anc = torch.full((len(inner), max(trie.depth - 1, 1)), -1, dtype=torch.long, device=device)
    cur = inner.clone()
    rows = torch.arange(len(inner), device=device)
    for _ in range(trie.depth - 1):
        ok = trie.node_depth[cur] >= 1
        anc[rows[ok], trie.node_depth[cur[ok]] - 1] = slot[cur[ok]]
        cur = torch.where(ok, parent[cur], cur)
    return inner, anc, parent


@torch.no_grad()
def score_catalogue(
    model, prompts: Sequence[Sequence[int]], trie: SIDTrie, pad_id: int, chunk: int = 256
) -> torch.Tensor:
    """Exact log-probability of every item's SID for each prompt, computing each shared prefix once.

    Each prompt is prefilled once. Every inner node of the trie (a prefix shorter than a whole SID,
    such as a distinct first token or first two tokens) then goes through the model once per
    prompt, as a single token with a tree-shaped attention mask: it sees the prompt and its own
    ancestors, at the position it has in the sequence prompt + prefix. Its log-probabilities score
    the node's children, and a SID's score is the sum along its path: the same number a forward
    pass over prompt + SID gives (:func:`score_all_items`), for one token per inner node instead of
    one sequence per item. Inner nodes go through in breadth-first chunks of ``chunk`` tokens.

    Returns:
        ``(B, n_items)`` float32 scores in ``trie.items`` order.

    Raises:
        ValueError: the model's attention implementation cannot take a custom mask (use sdpa or eager).
    """
    attn = custom_mask_attention(model, "exact scoring")
    device = trie.children.device
    mask, pos, out = _prefill(model, prompts, pad_id, device)
    b, t = mask.shape
    cache = out.cache
    edge = torch.zeros((b, trie.children.shape[0]), device=device)  # (B, n_nodes) log-prob of each node's token

    def expand(nodes: torch.Tensor, logits: torch.Tensor) -> None:  # nodes (c,), logits (B, c, V)
        kids = trie.children[nodes]  # (c, C)
        tok_logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, kids.clamp(min=0).expand(b, -1, -1))
        real = kids >= 0
        edge[:, trie.child_node[nodes][real]] = tok_logp[:, real]

    expand(torch.zeros(1, dtype=torch.long, device=device), out.logits[:, -1:])
    inner, anc, parent = _tree_layout(trie)
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(getattr(layer, "keys", None), torch.Tensor) for layer in layers):
        raise ValueError(f"exact scoring needs a per-layer key/value cache; {type(cache).__name__} has none")
    if any(getattr(layer, "is_sliding", False) for layer in layers):
        raise ValueError("exact scoring does not support sliding-window attention layers; use mode: beam")
    prompt_kv = [(layer.keys, layer.values) for layer in layers]
    store: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer, keys/values of the inner nodes with inner children
    n_store = int((trie.node_depth[inner] <= trie.depth - 2).sum())  # a prefix of ``inner`` (sorted by depth)
    last = pos[:, -1:]  # (B, 1) position of each prompt's last token
    keep_prompt = mask.bool().unsqueeze(1)  # (B, 1, T)
    node_depth = trie.node_depth[inner]
    for level in range(1, trie.depth):
        slots = (node_depth == level).nonzero(as_tuple=True)[0]
        for s in range(0, len(slots), chunk):
            at = slots[s : s + chunk]  # (c,) positions in ``inner``; their ancestors are all stored already
            nodes = inner[at]
            c = len(at)
            if level == 1:
                uniq, inv = at[:0], anc.new_zeros((c, 0))
            else:
                uniq, inv = torch.unique(anc[at, : level - 1], return_inverse=True)  # (u,), (c, level - 1)
            for layer, (pk, pv), kv in zip(layers, prompt_kv, store or [None] * len(layers)):
                layer.keys = pk if kv is None else torch.cat([pk, kv[0][:, :, uniq]], dim=-2)
                layer.values = pv if kv is None else torch.cat([pv, kv[1][:, :, uniq]], dim=-2)
            u = len(uniq)
            allowed = torch.zeros((b, c, t + u + c), dtype=torch.bool, device=device)
            allowed[:, :, :t] = keep_prompt
            rows = torch.arange(c, device=device)
            allowed[:, rows.unsqueeze(1).expand_as(inv), t + inv] = True  # the node's ancestors
            allowed[:, rows, t + u + rows] = True  # itself
            out = model(
                input_ids=trie.node_token[nodes].expand(b, -1),
                attention_mask=attention_mask_4d(allowed, attn, model.dtype),
                position_ids=last + level,
                cache=cache,
                use_cache=True,
            )
            expand(nodes, out.logits)
            if level < trie.depth - 1:  # deeper inner nodes will attend to these
                if not store:
                    store = [
                        (
                            layer.keys.new_zeros((*layer.keys.shape[:2], n_store, layer.keys.shape[-1])),
                            layer.values.new_zeros((*layer.values.shape[:2], n_store, layer.values.shape[-1])),
                        )
                        for layer in layers
                    ]
                for layer, (k, v) in zip(layers, store):
                    k[:, :, at] = layer.keys[:, :, -c:]
                    v[:, :, at] = layer.values[:, :, -c:]
    score = torch.zeros_like(edge)  # path sums, one depth at a time
    for d in range(1, trie.depth + 1):
        at = (trie.node_depth == d).nonzero(as_tuple=True)[0]
        score[:, at] = score[:, parent[at]] + edge[:, at]
    return score[:, trie.item_node]


def memory_per_user(
    model, prompt_len: int, trie: SIDTrie, mode: str, num_beams: int, chunk: int = _EVAL.exact_chunk
) -> int:
    """Bytes one user's decoding holds at its peak: an estimate erring on the high side.

    Beam search keeps a KV cache of ``num_beams`` rows (twice, while a reorder copies it) and
    float32 log-probabilities over the vocabulary per beam; exact scoring keeps the keys and values
    of every inner node, one chunk's cache (prompt, ancestors, chunk) and its logits and mask. Both add
    the prefill's working set (one layer's activations and attention scores over the prompt).
    """
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    elt = next(model.parameters()).element_size()
    kv_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * elt
    vocab = model.get_output_embeddings().weight.shape[0]
    inter = getattr(cfg, "intermediate_size", None) or 4 * cfg.hidden_size
    prefill = prompt_len * (4 * cfg.hidden_size + 3 * inter) * 4 + heads * prompt_len**2 * 4
    if mode == "beam":
        return 2 * kv_token * num_beams * (prompt_len + trie.depth) + 3 * num_beams * vocab * 4 + prefill
    rows = max(1, min(chunk, trie.n_inner))
    span = prompt_len + trie.depth * rows  # one chunk's cache: prompt, ancestors (< depth - 1 per row), the chunk
    cached = prompt_len + trie.n_inner + span  # the prefill's cache, the store, one chunk's cache
    working = rows * (3 * vocab * 4 + heads * span * 4 + (4 * cfg.hidden_size + 3 * inter) * 4)
    return kv_token * cached + working + prefill


def fit_batch_size(per_user: int, available: int, fraction: float, max_batch: int) -> int:
    """The most users per batch (at most ``max_batch``) whose decoding fits ``fraction`` of ``available`` bytes.

    >>> fit_batch_size(per_user=10**9, available=16 * 10**9, fraction=0.5, max_batch=64)
    8

    Raises:
        MemoryError: not even one user fits.
    """
    batch = min(max_batch, int(fraction * available // per_user))
    if batch < 1:
        raise MemoryError(
            f"decoding one user needs about {per_user / 1e9:.2f} GB but {fraction:.0%} of the "
            f"{available / 1e9:.2f} GB available is {fraction * available / 1e9:.2f} GB: lower eval.num_beams, "
            "use a smaller model, or raise eval.memory_fraction"
        )
    return batch


@dataclass
class Ranking:
    """The decoder's answer for a list of prompts, in prompt order."""

    items: torch.Tensor  # (N, K) int64 item ids, best first; -1 past the end of the catalogue
    scores: torch.Tensor  # (N, K) float32 SID log-probabilities; -inf past the end
    batch_size: int  # users per batch in the end (after any out-of-memory halving)
    seconds: float  # decoding wall time


def rank(
    model,
    prompts: Sequence[Sequence[int]],
    trie: SIDTrie,
    pad_id: int,
    *,
    mode: str = _EVAL.mode,
    num_beams: int = _EVAL.num_beams,
    top_k: int | None = None,
    max_batch: int = _EVAL.batch_size,
    memory_fraction: float = _EVAL.memory_fraction,
    chunk: int = _EVAL.exact_chunk,
    progress: bool = True,
    eos_id: int | None = None,
) -> Ranking:
    """Rank the index's SIDs for every prompt: the entry point of evaluation and recommend.

    Prompts are sorted by length so that batches carry little padding, and the batch size is the
    largest (up to ``max_batch``) whose estimated peak fits ``memory_fraction`` of the memory free
    now (:func:`memory_per_user`); on a GPU, an out-of-memory error halves it and retries the batch.

    Args:
        model: causal LM with the SID tokens, on the trie's device, in eval mode.
        prompts: token ids per user.
        trie: the index's :class:`SIDTrie`.
        pad_id: padding id.
        mode: ``beam`` (constrained beam search, :func:`constrained_beam_search`) or ``exact``
            (the whole catalogue scored, :func:`score_catalogue`). The defaults of this and the
            other decoding options are :class:`~genrec.settings.EvalSettings`'.
        num_beams: beams of the search (beam mode).
        top_k: results per user (default ``num_beams``; beam mode allows at most ``num_beams``).
        max_batch: the most users per batch.
        memory_fraction: share of the free memory decoding may plan to use.
        chunk: inner nodes per forward pass (exact mode).
        progress: show a progress bar.
        eos_id: beam mode: add the end-of-response token's log-probability to each SID's score
            (``eval.score_eos``, MiniOneRec's scoring; see :func:`constrained_beam_search`).

    Ties: beam mode as :func:`constrained_beam_search`; exact mode puts the lower item id first.

    Raises:
        ValueError: unknown mode, ``top_k`` > ``num_beams`` in beam mode, or ``eos_id`` in exact mode.
        MemoryError: one user does not fit.
    """
    from genrec.devices import available_memory_bytes

    if mode not in ("beam", "exact"):
        raise ValueError(f"unknown decoding mode {mode!r}: use beam or exact")
    k = top_k or num_beams
    if mode == "beam" and k > num_beams:
        raise ValueError(f"top_k {k} > num_beams {num_beams}: beam search returns at most num_beams SIDs")
    if mode == "exact" and eos_id is not None:
        raise ValueError("scoring the EOS is implemented for beam mode only")
    device = trie.children.device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    longest = max((len(p) for p in prompts), default=1)
    per_user = memory_per_user(model, longest, trie, mode, num_beams, chunk)
    available = available_memory_bytes(device)
    batch = fit_batch_size(per_user, available, memory_fraction, max_batch)
    log.info(
        "%s decoding: %d users, batch size %d (about %.3f GB per user, %.2f GB free, memory_fraction %.2f)",
        mode,
        len(prompts),
        batch,
        per_user / 1e9,
        available / 1e9,
        memory_fraction,
    )
    items = torch.full((len(prompts), k), -1, dtype=torch.long)
    scores = torch.full((len(prompts), k), NEG_INF)
    item_ids = torch.tensor(trie.items, device=device)
    start = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=f"{mode} decoding", unit="user", disable=not progress)
    s = 0
    while s < len(order):
        chunk_rows = order[s : s + batch]
        batch_prompts = [prompts[i] for i in chunk_rows]
        try:
            if mode == "beam":
                got_items, got_scores = constrained_beam_search(
                    model, batch_prompts, trie, num_beams, pad_id, eos_id=eos_id
                )
                got_items, got_scores = got_items[:, :k], got_scores[:, :k]
            else:
                full = score_catalogue(model, batch_prompts, trie, pad_id, chunk)
                got_scores, idx = (t[:, :k] for t in full.sort(dim=-1, descending=True, stable=True))
                got_items = item_ids[idx]
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            oom = True
        else:
            oom = False
        if oom:  # outside the handler, so that the failed batch's tensors are freed first
            batch = max(1, batch // 2)
            log.warning("out of memory: batch size lowered to %d", batch)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        rows = torch.tensor(chunk_rows)
        items[rows, : got_items.shape[1]] = got_items.cpu()
        scores[rows, : got_scores.shape[1]] = got_scores.float().cpu()
        s += len(chunk_rows)
        bar.update(len(chunk_rows))
    bar.close()
    return Ranking(items, scores, batch, time.perf_counter() - start)
