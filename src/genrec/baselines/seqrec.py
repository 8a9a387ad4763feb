"""Sequential recommenders over item ids: the SASRec and GRU4Rec baselines, and SASRec as an RL scorer.

Each reads a user's last ``max_len`` item ids (left-padded with the id ``n_items``) and scores every
item of the catalogue. They train with cross-entropy over the whole catalogue by default (``loss: ce``,
MiniOneRec's ``ce`` option; ``loss: bce`` is its default, a binary loss with one sampled negative),
Adam with L2 weight decay, and keep the epoch with the best validation NDCG@20 (:class:`Selection`).
Training stops after ``patience`` epochs without a better one, counted only once validation NDCG@20 has
beaten the most-popular ranking's by ``plateau_margin``: a model first learns popularity, and its
validation score can sit flat on that plateau for longer than the patience before the sequential
signal is learnt, so a clock started at epoch 1 can stop training there (docs/PROTOCOL.md). The
defaults in :class:`genrec.settings.SeqRecSettings` are MiniOneRec's sasrec.py hyperparameters:
hidden 32, one head, one block, dropout 0.3, history 10, lr 1e-3, L2 1e-5.

* ``sasrec`` (Kang & McAuley, 2018): learned positions, PyTorch's pre-norm causal self-attention
  blocks, output tied to the item embeddings.
* ``gru4rec`` (Hidasi et al., 2016): a GRU over the item embeddings, its last state scores items.
* ``sasrec_minionerec``: MiniOneRec's own SASRec model (:class:`SASRecMiniOneRec`); with ``loss: bce``
  and ``batch_size: 1024`` it is its sasrec.py, so its published figures can be checked like for like.

Test rows are ranked by the same code and metrics (:func:`genrec.results.write_item_rankings`) as the
LLM cells; the trained model is saved (``scorer/``) for use as a collaborative reward.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from genrec.baselines.popularity import popularity_ranking
from genrec.data.format import read_items, read_split
from genrec.io import atomic_path, read_json, write_json
from genrec.logs import log_settings
from genrec.metrics import per_row
from genrec.results import write_item_rankings
from genrec.settings import SEQREC_KINDS, SeqRecSettings

log = logging.getLogger(__name__)


class SASRec(nn.Module):
    """Self-attentive sequential recommendation over left-padded item-id histories."""

    def __init__(self, n_items: int, hidden: int, heads: int, blocks: int, max_len: int, dropout: float):
        super().__init__()
        self.n_items, self.heads = n_items, heads
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=n_items)
        self.pos = nn.Embedding(max_len, hidden)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=hidden, dropout=dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` item ids, left-padded -> ``(B, n_items)`` scores."""
        b, length = hist.shape
        x = self.item(hist) * math.sqrt(self.item.embedding_dim) + self.pos.weight[-length:]
        pad = hist == self.n_items
        blocked = torch.ones(length, length, dtype=torch.bool, device=hist.device).triu(1) | pad[:, None, :]
        blocked &= ~torch.eye(length, dtype=torch.bool, device=hist.device)  # a position always sees itself
        h = self.blocks(self.drop(x), mask=blocked.repeat_interleave(self.heads, 0))  # (B, L, H)
        return self.norm(h[:, -1]) @ self.item.weight[:-1].T


def _right_aligned(hist: torch.Tensor, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded histories as right-padded ones (real items from position 0) and their lengths.

    >>> _right_aligned(torch.tensor([[9, 9, 4], [1, 2, 3]]), n_items=9)[0].tolist()
    [[4, 9, 9], [1, 2, 3]]
    """
    length = hist.shape[1]
    lengths = (hist != n_items).sum(1)
    shift = (torch.arange(length, device=hist.device) + (length - lengths).unsqueeze(1)) % length
    return hist.gather(1, shift), lengths


class SASRecMiniOneRec(nn.Module):
    """MiniOneRec's SASRec model (its ``sasrec.py`` with ``SASRecModules_ori.py``), for like-for-like checks
    of its published figures; reimplemented here, the same computation.

    Histories are right-padded with positions counted from the first item; item embeddings start at
    N(0, 0.01) and are not scaled. One block: attention whose queries are layer-normed and whose keys
    and values are the raw embeddings, scaled by the hidden size (not the head size), causal, with a
    residual to the normed queries; then a position-wise feed-forward (ReLU) with its own residual and
    layer norm, the padding zeroed, a last layer norm, and the state at the last real item scored by a
    separate output layer with bias (not tied to the item embeddings).
    """

    def __init__(self, n_items: int, hidden: int, heads: int, blocks: int, max_len: int, dropout: float):
        super().__init__()
        if blocks != 1:
            raise ValueError("sasrec_minionerec has MiniOneRec's single block: set blocks: 1")
        self.n_items, self.heads, self.hidden = n_items, heads, hidden
        self.item = nn.Embedding(n_items + 1, hidden)
        nn.init.normal_(self.item.weight, 0, 0.01)
        self.pos = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.norm_query, self.norm_ff, self.norm_out = (nn.LayerNorm(hidden) for _ in range(3))
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_drop = nn.Dropout(dropout)
        self.ff_in, self.ff_out = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.ff_drop = nn.Dropout(dropout)
        self.ff_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n_items)

    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` item ids, left-padded -> ``(B, n_items)`` scores."""
        seq, lengths = _right_aligned(hist, self.n_items)
        b, length = seq.shape
        keep = (seq != self.n_items).unsqueeze(-1).float()
        x = self.drop(self.item(seq) + self.pos.weight[:length]) * keep
        q = self.norm_query(x)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, L, H) -> (B, heads, L, H / heads)
            return t.view(b, length, self.heads, -1).transpose(1, 2)

        scores = split(self.query(q)) @ split(self.key(x)).transpose(-1, -2) / math.sqrt(self.hidden)
        future = torch.ones(length, length, dtype=torch.bool, device=seq.device).triu(1)
        attn = self.attn_drop(torch.softmax(scores.masked_fill(future, -(2.0**32) + 1), dim=-1))
        h = (attn @ split(self.value(x))).transpose(1, 2).reshape(b, length, -1) + q
        y = self.norm_ff(h)
        h = self.ff_norm(self.ff_drop(self.ff_out(torch.relu(self.ff_in(y)))) + y) * keep
        h = self.norm_out(h)
        last = h[torch.arange(b, device=seq.device), (lengths - 1).clamp(min=0)]
        return self.out(last)


class GRU4Rec(nn.Module):
    """A GRU over the item embeddings of a history; its last state scores the catalogue."""

    def __init__(self, n_items: int, hidden: int, blocks: int, dropout: float, **_):
        super().__init__()
        self.n_items = n_items
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=n_items)
        self.gru = nn.GRU(hidden, hidden, blocks, batch_first=True, dropout=dropout if blocks > 1 else 0.0)
        self.drop = nn.Dropout(dropout)

    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` item ids, left-padded -> ``(B, n_items)`` scores."""
        right, lengths = _right_aligned(hist, self.n_items)  # right-padded, for packing
        lengths = lengths.clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.item(right)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)  # (blocks, B, H)
        return self.drop(h[-1]) @ self.item.weight[:-1].T


def build_model(kind: str, n_items: int, settings: SeqRecSettings) -> nn.Module:
    """A fresh SASRec or GRU4Rec.

    Raises:
        ValueError: unknown kind.
    """
    if kind not in SEQREC_KINDS:
        raise ValueError(f"unknown sequential recommender {kind!r}: use one of {SEQREC_KINDS}")
    cls = {"sasrec": SASRec, "gru4rec": GRU4Rec, "sasrec_minionerec": SASRecMiniOneRec}[kind]
    model = cls(
        n_items,
        hidden=settings.hidden,
        heads=settings.heads,
        blocks=settings.blocks,
        max_len=settings.max_len,
        dropout=settings.dropout,
    )
    model.max_len = settings.max_len  # the history length it reads (rewards encode histories with it)
    return model


def encode_histories(histories: Sequence[Sequence[int]], n_items: int, max_len: int) -> torch.Tensor:
    """The last ``max_len`` ids of each history, left-padded with ``n_items``.

    >>> encode_histories([[1, 2, 3], [4]], n_items=9, max_len=2).tolist()
    [[2, 3], [9, 4]]
    """
    out = torch.full((len(histories), max_len), n_items, dtype=torch.long)
    for r, h in enumerate(histories):
        h = list(h)[-max_len:]
        if h:
            out[r, max_len - len(h) :] = torch.tensor(h)
    return out


@torch.no_grad()
def target_ranks(model: nn.Module, hist: torch.Tensor, targets: torch.Tensor, batch: int = 1024) -> list[int]:
    """0-based rank of each target among all items (ties count against it: equal scores rank above)."""
    model.eval()
    ranks = []
    for s in range(0, len(hist), batch):
        scores = model(hist[s : s + batch])
        t = targets[s : s + batch]
        ranks += ((scores >= scores.gather(1, t.unsqueeze(1))).sum(1) - 1).tolist()
    return ranks


class Selection:
    """The epoch-selection rule: keep the epoch with the best validation NDCG@20 and stop after
    ``patience`` epochs without a better one, counting only from the first epoch above ``floor``.

    ``floor`` is the most-popular ranking's validation NDCG@20 times ``1 + plateau_margin``
    (``patience_from: popularity``), or None to count from the first epoch (``patience_from: start``).

    >>> rule = Selection(patience=2, floor=0.5)
    >>> [rule.update(e, v) for e, v in enumerate([0.1, 0.1, 0.1, 0.6, 0.7, 0.7, 0.7], 1)]
    [True, False, False, True, True, False, False]
    >>> rule.stopped, rule.best_epoch, rule.left_plateau_epoch
    (True, 5, 4)
    >>> rule = Selection(patience=2, floor=None)
    >>> [rule.update(e, v) for e, v in enumerate([0.1, 0.1, 0.1], 1)], rule.stopped
    ([True, False, False], True)
    """

    def __init__(self, patience: int, floor: float | None):
        self.patience, self.floor = patience, floor
        self.best, self.best_epoch, self.bad, self.stopped = -1.0, 0, 0, False
        self.left_plateau_epoch: int | None = None if floor is not None else 0

    def update(self, epoch: int, ndcg: float) -> bool:
        """Record an epoch's validation NDCG@20; True when it is the best so far (keep its weights)."""
        if self.left_plateau_epoch is None and ndcg > self.floor:
            self.left_plateau_epoch = epoch
        if ndcg > self.best:
            self.best, self.best_epoch, self.bad = ndcg, epoch, 0
            return True
        if self.left_plateau_epoch is not None:
            self.bad += 1
            self.stopped = self.bad >= self.patience
        return False


def popularity_ndcg(train_targets: Sequence[int], targets: Sequence[int], n_items: int) -> float:
    """NDCG@20 of the most-popular ranking (:func:`genrec.baselines.popularity.popularity_ranking`) on ``targets``.

    >>> round(popularity_ndcg([3, 3, 1], [3, 1, 0], n_items=4), 4)  # ranks 1, 2, 3
    0.7103
    """
    position = {item: r for r, item in enumerate(popularity_ranking(list(train_targets), n_items, n_items))}
    return sum(per_row([position[t] for t in targets], "NDCG@20")) / len(targets)


def train(
    kind: str,
    settings: SeqRecSettings,
    train_df,
    valid_df,
    n_items: int,
    progress: bool = True,
    on_epoch: Callable[[int, nn.Module, float], None] | None = None,
) -> tuple[nn.Module, dict]:
    """Train on the train split, selecting the epoch by validation NDCG@20 (:class:`Selection`).

    Args:
        on_epoch: called after each epoch with its number, the model and its validation NDCG@20 (the
            plateau benchmark keeps what another rule would have selected; the rule only decides
            when to stop, so the epochs are the same under any rule until one of them stops).

    Returns:
        The best model (eval mode) and a log: epochs run, best epoch, its validation NDCG@20, the
        most-popular ranking's, the epoch that left the plateau, per-epoch loss and validation
        curve, time.
    """
    torch.manual_seed(settings.seed)
    model = build_model(kind, n_items, settings)
    x = encode_histories(train_df["history"], n_items, settings.max_len)
    y = torch.tensor(train_df["item_id"].to_numpy())
    vx = encode_histories(valid_df["history"], n_items, settings.max_len)
    vy = torch.tensor(valid_df["item_id"].to_numpy())
    opt = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(settings.seed)
    popular = popularity_ndcg(y.tolist(), vy.tolist(), n_items)
    floor = popular * (1 + settings.plateau_margin) if settings.patience_from == "popularity" else None
    rule, best_state = Selection(settings.patience, floor), None
    curve: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(range(1, settings.max_epochs + 1), desc=kind, unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), settings.batch_size):
            idx = order[s : s + settings.batch_size]
            loss = _loss(model(x[idx]), y[idx], settings.loss, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        ndcg = sum(per_row(target_ranks(model, vx, vy), "NDCG@20")) / len(vy)
        curve.append({"epoch": epoch, "train_loss": total / len(x), "valid_ndcg@20": ndcg})
        bar.set_postfix(loss=f"{total / len(x):.3f}", valid_ndcg20=f"{ndcg:.4f}")
        if rule.update(epoch, ndcg):
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(epoch, model, ndcg)
        if rule.stopped:
            break
    model.load_state_dict(best_state)
    model.eval()
    elapsed = time.perf_counter() - start
    log.info(
        "%s: best validation NDCG@20 %.4f at epoch %d of %d (%.1f s); most-popular's %.4f",
        kind, rule.best, rule.best_epoch, epoch, elapsed, popular,
    )  # fmt: skip
    if rule.left_plateau_epoch is None:
        log.warning(
            "%s never beat most-popular's validation NDCG@20 (%.4f) by plateau_margin %.2f in %d epochs: "
            "it is on the popularity plateau (raise max_epochs or learning_rate, or check the data)",
            kind, popular, settings.plateau_margin, epoch,
        )  # fmt: skip
    return model, {
        "epochs": epoch,
        "best_epoch": rule.best_epoch,
        "valid_ndcg@20": rule.best,
        "popularity_valid_ndcg@20": popular,
        "left_plateau_epoch": rule.left_plateau_epoch,
        "train_time_s": elapsed,
        "curve": curve,
    }


def _loss(scores: torch.Tensor, targets: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """``ce``: cross-entropy over the catalogue. ``bce``: MiniOneRec's binary loss, the target's logit
    against 1 and one uniformly drawn other item's against 0, averaged over both."""
    if kind == "ce":
        return nn.functional.cross_entropy(scores, targets)
    n = scores.shape[1]
    neg = torch.randint(0, n - 1, targets.shape, generator=gen)
    neg = neg + (neg >= targets).long()  # uniform over the items other than the target
    logits = torch.cat([scores.gather(1, targets[:, None]), scores.gather(1, neg[:, None])])
    labels = torch.cat([torch.ones(len(targets), 1), torch.zeros(len(targets), 1)])
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


def save_scorer(
    model: nn.Module, kind: str, settings: SeqRecSettings, n_items: int, out_dir: str, train_log: dict | None = None
) -> None:
    """Write ``model.pt`` (state dict), ``config.json`` and ``train_log.json`` into ``out_dir``
    (atomically, as a directory)."""
    with atomic_path(out_dir, is_dir=True) as tmp:
        torch.save(model.state_dict(), os.path.join(tmp, "model.pt"))
        write_json(os.path.join(tmp, "config.json"), {"kind": kind, "n_items": n_items, **settings.to_dict()})
        write_json(os.path.join(tmp, "train_log.json"), train_log or {})


def load_scorer(path: str | os.PathLike[str]) -> nn.Module:
    """A saved SASRec/GRU4Rec in eval mode: ``model(encode_histories(...))`` gives ``(B, n_items)`` scores.

    Raises:
        FileNotFoundError: ``path`` holds no scorer.
    """
    p = Path(path)
    cfg = read_json(p / "config.json", "scorer config")
    kind, n_items = cfg.pop("kind"), cfg.pop("n_items")
    settings = SeqRecSettings.from_dict(cfg, f"scorer {p}")
    model = build_model(kind, n_items, settings)
    model.load_state_dict(torch.load(p / "model.pt", weights_only=True))
    model.settings = settings  # what it was trained with (score_baseline's list length)
    return model.eval()


def train_baseline(
    kind: str,
    settings: SeqRecSettings,
    train_csv: str,
    valid_csv: str,
    item_json: str,
    scorer_dir: str,
    threads: int | None = None,
) -> dict:
    """Train SASRec or GRU4Rec on the train split, selecting the epoch on validation, and save it as
    ``scorer_dir`` (``model.pt``, ``config.json``, ``train_log.json``): rule ``baseline_seqrec_train``.

    Training never sees the evaluated split, so switching ``eval.split`` rescores the baseline
    without retraining it (nor the GRPO cells whose collaborative reward reads this scorer).

    Returns:
        The training log (epochs, best epoch, validation NDCG@20, time, curve).
    """
    log_settings(log, kind, settings)
    if threads:
        torch.set_num_threads(threads)
    n = len(read_items(item_json))
    splits = {s: read_split(p, n_items=n) for s, p in (("train", train_csv), ("valid", valid_csv))}
    model, train_log = train(kind, settings, splits["train"], splits["valid"], n)
    save_scorer(model, kind, settings, n, scorer_dir, train_log)
    return train_log


def score_baseline(
    scorer_dir: str,
    split_csv: str,
    item_json: str,
    results_json: str,
    metrics_json: str,
    threads: int | None = None,
    bootstrap: str = "user",
) -> dict:
    """Rank the whole catalogue with a trained scorer for every row of the evaluated split
    (``split_csv``: test, or valid while choosing settings) and write both result files: rule
    ``baseline_seqrec``.

    The epoch was selected on the validation split; scored on that same split (``eval.split: valid``)
    the baseline's figure is optimistic, which makes comparisons against it conservative.

    Returns:
        The metrics (with the training figures under ``train``).
    """
    if threads:
        torch.set_num_threads(threads)
    model = load_scorer(scorer_dir)
    train_log = read_json(Path(scorer_dir) / "train_log.json", "scorer training log")
    n = len(read_items(item_json))
    if model.n_items != n:
        raise ValueError(f"{scorer_dir} was trained on {model.n_items} items, {item_json} has {n}")
    test = read_split(split_csv, n_items=n)
    hist = encode_histories(test["history"], n, model.max_len)
    start = time.perf_counter()
    with torch.no_grad():
        k = min(model.settings.top_k, n)
        top = torch.cat([model(hist[s : s + 1024]).topk(k, dim=-1).indices for s in range(0, len(hist), 1024)])
    rank_time = time.perf_counter() - start
    extra = {
        "users_per_s": len(test) / rank_time,
        "train": {k: v for k, v in train_log.items() if k != "curve"},
        "curve": train_log["curve"],
        "settings": model.settings.to_dict(),
        "split": Path(split_csv).stem,
    }
    return write_item_rankings(test, top.tolist(), n, results_json, metrics_json, extra, bootstrap)


def run_baseline(
    kind: str,
    settings: SeqRecSettings,
    train_csv: str,
    valid_csv: str,
    split_csv: str,
    item_json: str,
    results_json: str,
    metrics_json: str,
    scorer_dir: str,
    threads: int | None = None,
    bootstrap: str = "user",
) -> dict:
    """:func:`train_baseline` then :func:`score_baseline`: the two rules in one call (benchmarks)."""
    train_baseline(kind, settings, train_csv, valid_csv, item_json, scorer_dir, threads)
    return score_baseline(scorer_dir, split_csv, item_json, results_json, metrics_json, threads, bootstrap)
