"""RQ-VAE for semantic IDs: an MLP autoencoder whose latent is quantised by residual codebooks.

Follows the recipe MiniOneRec uses (``rq/models/rqvae.py``; ``../shared/reference/minionerec.md``
§3.1): encoder MLP ``d_in -> layers -> e_dim`` with ReLU between layers, a mirrored decoder,
``levels`` codebooks with nearest-code assignment and a straight-through estimator, loss
``MSE(x_hat, x) + quant_weight * mean_l(||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2)``, codebooks
initialised by k-means on the first pass. Added here: dead codes (used by no item in an epoch) are
restarted on random residuals every ``dead_code_every`` epochs, and training is seeded end to end.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import Tensor, nn
from tqdm.auto import tqdm

from genrec.settings import SIDSettings

log = logging.getLogger(__name__)


_SID = SIDSettings()  # the rqvae method's defaults live there, once


def rqvae_layers(d_in: int) -> tuple[int, ...]:
    """Default encoder sizes: MiniOneRec's for LLM-sized inputs (its 2560-d Qwen embeddings), a smaller stack otherwise.

    >>> rqvae_layers(2560), rqvae_layers(384)
    ((2048, 1024, 512, 256, 128, 64), (512, 256, 128))
    """
    return (2048, 1024, 512, 256, 128, 64) if d_in >= 2048 else (512, 256, 128)


@dataclass(frozen=True)
class RQVAEConfig:
    """The model and its training; :meth:`from_settings` builds it from a ``sid_methods`` entry."""

    d_in: int
    layers: tuple[int, ...] = _SID.layers  # encoder hidden sizes; () = rqvae_layers(d_in)
    e_dim: int = _SID.e_dim  # latent (and code) dimension
    levels: int = _SID.levels
    codebook_size: int = _SID.codebook_size
    beta: float = _SID.beta  # commitment weight
    quant_weight: float = 1.0
    lr: float = _SID.learning_rate
    weight_decay: float = 0.0
    epochs: int = _SID.epochs
    batch_size: int = _SID.batch_size
    kmeans_init: bool = True
    kmeans_iters: int = _SID.kmeans_iters
    dead_code_every: int = _SID.dead_code_every  # epochs between dead-code restarts; 0 = off
    seed: int = _SID.seed

    @classmethod
    def from_settings(cls, s: SIDSettings, d_in: int) -> RQVAEConfig:
        return cls(
            d_in=d_in,
            layers=tuple(s.layers),
            e_dim=s.e_dim,
            levels=s.levels,
            codebook_size=s.codebook_size,
            beta=s.beta,
            lr=s.learning_rate,
            epochs=s.epochs,
            batch_size=s.batch_size,
            kmeans_iters=s.kmeans_iters,
            dead_code_every=s.dead_code_every,
            seed=s.seed,
        )


def _mlp(sizes: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        nn.init.xavier_normal_(lin.weight)
        nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


class RQVAE(nn.Module):
    def __init__(self, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        sizes = [cfg.d_in, *(cfg.layers or rqvae_layers(cfg.d_in)), cfg.e_dim]
        self.encoder = _mlp(sizes)
        self.decoder = _mlp(sizes[::-1])
        self.books = nn.ModuleList(nn.Embedding(cfg.codebook_size, cfg.e_dim) for _ in range(cfg.levels))

    def encode(self, x: Tensor) -> Tensor:  # (N, d_in) -> (N, e_dim)
        return self.encoder(x)

    def quantise(self, z: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Residual quantisation of ``z`` (N, e_dim).

        Returns:
            ``(z_q, quant_loss, residual per level)``; the codes are left in ``self.last_codes``.
        """
        residual, z_q, loss, codes, residuals = z, torch.zeros_like(z), z.new_zeros(()), [], []
        for book in self.books:
            residuals.append(residual)
            idx = torch.cdist(residual, book.weight).argmin(dim=1)  # (N,)
            e = book(idx)  # (N, e_dim)
            loss = loss + ((residual.detach() - e) ** 2).mean() + self.cfg.beta * ((residual - e.detach()) ** 2).mean()
            z_q = z_q + e
            residual = residual - e.detach()
            codes.append(idx)
        self.last_codes = torch.stack(codes, dim=1)  # (N, levels)
        z_q = z + (z_q - z).detach()  # straight-through
        return z_q, loss / len(self.books), residuals

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """``(x_hat, {"recon", "quant", "total"}, codes (N, levels) int64)``."""
        z_q, quant, _ = self.quantise(self.encode(x))
        x_hat = self.decoder(z_q)
        recon = ((x_hat - x) ** 2).mean()
        return x_hat, {"recon": recon, "quant": quant, "total": recon + self.cfg.quant_weight * quant}, self.last_codes

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:  # (N, d_in) -> (N, levels) int64
        self.quantise(self.encode(x))
        return self.last_codes

    def codebooks(self) -> list[np.ndarray]:
        """Each level's codebook, ``(codebook_size, e_dim)``."""
        return [b.weight.detach().cpu().numpy().copy() for b in self.books]

    @torch.no_grad()
    def kmeans_init_(self, z: Tensor, iters: int, seed: int) -> None:
        """Set every codebook to k-means centres of its level's residuals of ``z``."""
        residual = z
        gen = np.random.default_rng(seed)
        for level, book in enumerate(self.books):
            r = residual.cpu().numpy().astype(np.float64)
            k = self.cfg.codebook_size
            distinct = len(np.unique(r.round(8), axis=0))
            if distinct >= k:
                centres = KMeans(k, n_init=1, max_iter=iters, random_state=seed + level).fit(r).cluster_centers_
            else:  # too few distinct residuals: k-means on what exists, the rest near random residuals
                base = KMeans(distinct, n_init=1, max_iter=iters, random_state=seed + level).fit(r).cluster_centers_
                extra = r[gen.integers(0, len(r), k - distinct)] + gen.normal(0, 1e-3, (k - distinct, r.shape[1]))
                centres = np.concatenate([base, extra])
            book.weight.copy_(torch.as_tensor(centres, dtype=book.weight.dtype))
            residual = residual - book(torch.cdist(residual, book.weight).argmin(dim=1))

    @torch.no_grad()
    def restart_dead_codes_(self, x: Tensor, generator: torch.Generator) -> int:
        """Move codes no item uses onto random residuals of their level; returns how many moved."""
        _, _, residuals = self.quantise(self.encode(x))
        moved = 0
        for level, book in enumerate(self.books):
            used = torch.bincount(self.last_codes[:, level], minlength=self.cfg.codebook_size) > 0
            dead = (~used).nonzero().flatten()
            if len(dead):
                pick = torch.randint(0, len(x), (len(dead),), generator=generator)
                book.weight[dead] = residuals[level][pick]
                moved += len(dead)
        return moved


def train_rqvae(x: np.ndarray, cfg: RQVAEConfig, device: torch.device | None = None) -> tuple[RQVAE, list[dict]]:
    """Train an RQ-VAE on ``x`` (N, d_in) and return it (eval mode, CPU) with per-epoch curves.

    The same seed gives the same codes on the same machine (CPU).
    """
    device = device or torch.device("cpu")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    model = RQVAE(cfg).to(device)
    if cfg.kmeans_init:
        with torch.no_grad():
            model.kmeans_init_(model.encode(xt), cfg.kmeans_iters, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    curves: list[dict] = []
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="rqvae", unit="epoch"):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), cfg.batch_size):
            _, losses, _ = model(xt[order[start : start + cfg.batch_size]])
            opt.zero_grad()
            losses["total"].backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        model.eval()
        with torch.no_grad():
            _, losses, codes = model(xt)
        restarted = 0
        if cfg.dead_code_every and epoch % cfg.dead_code_every == 0 and epoch < cfg.epochs:
            restarted = model.restart_dead_codes_(xt, gen)
        used = sum(
            int((torch.bincount(codes[:, lv], minlength=cfg.codebook_size) > 0).sum()) for lv in range(cfg.levels)
        )
        curves.append(
            {
                "epoch": epoch,
                "loss": float(losses["total"]),
                "recon": float(losses["recon"]),
                "quant": float(losses["quant"]),
                "collision_rate": 1 - len(torch.unique(codes, dim=0)) / len(codes),
                "dead_codes": cfg.levels * cfg.codebook_size - used,
                "restarted": restarted,
            }
        )
    log.info(
        "rqvae: loss %.4f -> %.4f, collision rate %.4f",
        curves[0]["loss"],
        curves[-1]["loss"],
        curves[-1]["collision_rate"],
    )
    return model.cpu().eval(), curves
