"""Building semantic IDs from item embeddings, unique by construction, with a quality report.

Methods (``sid_methods.*.method``):

* ``rkmeans``: residual k-means; level ``l`` clusters the residual left by levels ``< l``.
* ``rkmeans_balanced``: the same with capacity-constrained assignment, so that every code of a
  level holds at most ``ceil(N / codebook_size)`` items (codes are used evenly).
* ``rqvae``: an RQ-VAE (:mod:`genrec.rqvae`) trained on the embeddings; codes of its latent.
* ``import``: an existing ``index.json`` (e.g. MiniOneRec's shipped one), to compare published SIDs.

Collisions (items whose full code coincides) are then removed. ``dedup: move`` moves every
colliding item but one to the nearest free code (:func:`resolve_collisions`: a depth-first search
over the codes of each level in order of distance, so a moved item keeps as much of its prefix as
capacity allows; for the last level this is the balanced re-assignment MiniOneRec's Sinkhorn step
intends, without its 20-round give-up). ``dedup: level`` instead appends a ``<d_r>`` level when,
and only when, collisions remain (every item then gets it, so SIDs keep one length); imported
indices always use it, since they have no codebooks to move items in.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Mapping

import numpy as np
from sklearn.cluster import KMeans

from genrec.data.format import SPLITS, Sample, read_items, read_split, samples_to_frame, write_dataset
from genrec.io import read_json, write_json
from genrec.logs import log_settings
from genrec.report.plots import plot_code_usage
from genrec.settings import SIDSettings
from genrec.sids.format import check_index, codes_to_index, load_index, sid_strings, token_code

log = logging.getLogger(__name__)


def load_embeddings(path: str | os.PathLike[str], n_items: int) -> np.ndarray:
    """Load an ``(N, d)`` embedding file and check it against the catalogue.

    Raises:
        FileNotFoundError, ValueError: missing file, wrong row count, or NaN/inf rows.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embedding file not found: {path}")
    try:
        emb = np.load(path)
    except (ValueError, OSError) as err:  # object arrays (pickles) and files that are not .npy
        raise ValueError(f"{path} is not a numeric .npy array: {err}") from err
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
        raise ValueError(f"{path} holds {emb.dtype} values; embeddings must be real numbers")
    if emb.ndim != 2 or emb.shape[0] != n_items:
        raise ValueError(
            f"{path} has shape {emb.shape}, expected ({n_items}, d): one row per item id; "
            "re-run embed_items for this dataset"
        )
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: rows {bad[:10].tolist()} contain NaN/inf; fix the encoder or item text")
    distinct = len(np.unique(emb, axis=0))
    if distinct == 1 and n_items > 1:
        raise ValueError(
            f"{path}: all {n_items} item embeddings are identical, so no quantiser can tell the items apart; "
            f"check the item texts (item.json) and the encoder (a broken or untrained model gives one vector)"
        )
    if distinct < n_items:
        log.warning(
            "%s: only %d distinct embeddings for %d items (items with identical text?); their SIDs differ only "
            "by the collision handling (dedup)",
            path,
            distinct,
            n_items,
        )
    return emb.astype(np.float64)


def residual_kmeans(x: np.ndarray, s: SIDSettings, balanced: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """Residual k-means codes of (already centred) vectors.

    Args:
        x: ``(N, d)`` vectors.
        s: levels, codebook size, iterations, restarts and seed.
        balanced: cap every code of a level at ``ceil(N / codebook_size)`` items.

    Returns:
        ``codes`` ``(N, levels)`` int64 and one ``(K_l, d)`` centroid array per level
        (``K_l < codebook_size`` only when fewer distinct residuals exist).
    """
    residual = x.copy()
    codes, centroids = [], []
    for level in range(s.levels):
        k = min(s.codebook_size, len(np.unique(residual.round(12), axis=0)))
        km = KMeans(n_clusters=k, n_init=s.n_init, max_iter=s.kmeans_iters, random_state=s.seed + level)
        labels = km.fit_predict(residual)
        centers = km.cluster_centers_
        if balanced:
            labels, centers = balanced_kmeans(residual, centers, s.balance_iters)
        centroids.append(centers)
        codes.append(labels)
        residual = residual - centers[labels]
        log.info(
            "level %d: %d codes used of %d, largest code holds %d items",
            level,
            len(np.unique(labels)),
            k,
            np.bincount(labels).max(),
        )
    return np.stack(codes, axis=1).astype(np.int64), centroids


def capacitated_assign(dist: np.ndarray, cap: int) -> np.ndarray:
    """Assign rows to columns, nearest first, with at most ``cap`` rows per column.

    Rounds of proposals: every unassigned row proposes its nearest non-full column, and each
    column accepts its closest proposers up to its remaining capacity. Vectorised per round.

    Args:
        dist: ``(N, K)`` distances.
        cap: the column capacity; ``cap * K >= N`` is required.

    Returns:
        ``(N,)`` int64 column of each row.
    """
    n, k = dist.shape
    if cap * k < n:
        raise ValueError(f"capacity {cap} x {k} codes cannot hold {n} items")
    labels = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)
    while (labels < 0).any():
        todo = np.flatnonzero(labels < 0)
        d = dist[todo].copy()
        d[:, counts >= cap] = np.inf
        choice = d.argmin(axis=1)
        order = np.lexsort((d[np.arange(len(todo)), choice], choice))  # by column, then distance
        col = choice[order]
        rank = np.arange(len(order)) - np.searchsorted(col, col, side="left")
        accept = rank < (cap - counts[col])
        labels[todo[order[accept]]] = col[accept]
        counts += np.bincount(col[accept], minlength=k)
    return labels


def balanced_kmeans(x: np.ndarray, centers: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations with capacity-constrained assignment (``ceil(N/K)`` items per code)."""
    cap = math.ceil(len(x) / len(centers))
    labels = np.full(len(x), -1)
    for _ in range(max(1, iters)):
        dist = (x**2).sum(1)[:, None] - 2 * x @ centers.T + (centers**2).sum(1)[None, :]  # (N, K)
        new = capacitated_assign(dist, cap)
        if (new == labels).all():
            break
        labels = new
        for c in range(len(centers)):
            members = x[labels == c]
            if len(members):
                centers[c] = members.mean(axis=0)
    return labels, centers


def resolve_collisions(x: np.ndarray, codes: np.ndarray, centroids: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Give every item a unique code, moving colliding items to their nearest free code.

    In each group of items sharing a full code, the item closest to the code keeps it; each
    other item (in id order) takes the first free code of a depth-first search that visits the
    codes of each level in order of distance to that item's residual.

    Args:
        x: ``(N, d)`` the vectors that were quantised (centred embeddings, or an RQ-VAE latent).
        codes: ``(N, L)`` codes from :func:`residual_kmeans`.
        centroids: the per-level centroid arrays.

    Returns:
        ``(unique_codes, n_moved)``.

    Raises:
        ValueError: the codebooks cannot hold ``N`` distinct codes.
    """
    n, levels = codes.shape
    sizes = [len(c) for c in centroids]
    if math.prod(sizes) < n:
        raise ValueError(
            f"{n} items cannot get unique SIDs from codebooks of sizes {sizes} "
            f"({math.prod(sizes)} codes); raise codebook_size or levels (a level with fewer codes than "
            f"codebook_size had fewer distinct vectors to cluster: items with identical embeddings need "
            f"dedup: level)"
        )
    recon = sum(centroids[lv][codes[:, lv]] for lv in range(levels))
    err = ((x - recon) ** 2).sum(axis=1)
    # capacity[d] = number of full codes under one prefix of length d
    capacity = [math.prod(sizes[d:]) for d in range(levels + 1)]
    counts: Counter[tuple[int, ...]] = Counter()
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(row, []).append(i)
    out = codes.copy()
    movers = []
    for code, members in groups.items():
        keep = min(members, key=lambda i: (err[i], i))
        for d in range(levels + 1):
            counts[code[:d]] += 1
        movers += [i for i in members if i != keep]
    for i in sorted(movers):
        new = _nearest_free(x[i], (), 0, centroids, counts, capacity)
        assert new is not None  # capacity was checked above
        for d in range(levels + 1):
            counts[new[:d]] += 1
        out[i] = new
    return out, len(movers)


def _nearest_free(r, prefix, level, centroids, counts, capacity):
    if level == len(centroids):
        return prefix if counts[prefix] == 0 else None
    order = np.argsort(((centroids[level] - r) ** 2).sum(axis=1), kind="stable")
    for c in order.tolist():
        p = prefix + (c,)
        if counts[p] >= capacity[level + 1]:
            continue
        found = _nearest_free(r - centroids[level][c], p, level + 1, centroids, counts, capacity)
        if found is not None:
            return found
    return None


def add_dedup_level(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Append a level numbering the items of each collision group (0, 1, ...), if any collide.

    Returns:
        ``(codes, n_extra)``: codes unchanged when already unique, else ``(N, L+1)``; ``n_extra``
        is the size of the added level (0 when none was added).
    """
    groups: dict[tuple[int, ...], int] = {}
    extra = np.zeros(len(codes), dtype=np.int64)
    for i, row in enumerate(map(tuple, codes.tolist())):
        extra[i] = groups.get(row, 0)
        groups[row] = extra[i] + 1
    if extra.max() == 0:
        return codes, 0
    return np.concatenate([codes, extra[:, None]], axis=1), int(extra.max()) + 1


def index_to_codes(index: dict[int, list[str]]) -> np.ndarray:
    """``(N, L)`` integer codes of an index's tokens (``<a_60>`` -> 60).

    Raises:
        ValueError: SIDs of different lengths (a fourth level only on some items).
    """
    lengths = {len(v) for v in index.values()}
    if len(lengths) != 1:
        raise ValueError(f"imported index has SIDs of lengths {sorted(lengths)}; one length is needed")
    return np.array([[token_code(t) for t in index[i]] for i in sorted(index)], dtype=np.int64)


def semantic_coherence(emb: np.ndarray, first: np.ndarray, pairs: int = 20000, seed: int = 0) -> dict[str, float]:
    """Mean cosine similarity of item pairs sharing a first-level code vs random pairs."""
    rng = np.random.default_rng(seed)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    a, b = rng.integers(0, len(emb), pairs), rng.integers(0, len(emb), pairs)
    keep = a != b
    random_sim = float((unit[a[keep]] * unit[b[keep]]).sum(1).mean())
    order = np.argsort(first, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(first[order])) + 1)
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return {"same_code_cosine": float("nan"), "random_cosine": random_sim}
    sizes = np.array([len(g) * (len(g) - 1) for g in groups], dtype=float)
    pick = rng.choice(len(groups), size=pairs, p=sizes / sizes.sum())
    sims = []
    for g in pick.tolist():
        i, j = rng.choice(groups[g], size=2, replace=False)
        sims.append(float(unit[i] @ unit[j]))
    return {"same_code_cosine": float(np.mean(sims)), "random_cosine": random_sim}


def sid_stats(
    codes_before: np.ndarray,
    codes_after: np.ndarray,
    emb: np.ndarray,
    n_moved: int,
    recon_error: float | None,
    seed: int = 0,
) -> dict:
    """The quality report written as ``sid_stats.json``.

    Collision rate before and after de-duplication, per-level codebook utilisation and entropy,
    items per prefix (max/mean) at every depth, relative reconstruction error (when the method
    reconstructs) and semantic coherence of first-level codes.
    """
    n = len(codes_before)
    per_level = []
    for lv in range(codes_after.shape[1]):
        counts = np.bincount(codes_after[:, lv])
        used = counts[counts > 0]
        p = used / n
        ent = float(-(p * np.log2(p)).sum())
        per_level.append(
            {
                "codes_used": int(len(used)),
                "max_code": int(len(counts) - 1),
                "entropy_bits": ent,
                "max_items_per_code": int(used.max()),
            }
        )
    prefixes = []
    for d in range(1, codes_after.shape[1] + 1):
        _, counts = np.unique(codes_after[:, :d], axis=0, return_counts=True)
        prefixes.append(
            {
                "depth": d,
                "prefixes": int(len(counts)),
                "max_items": int(counts.max()),
                "mean_items": float(counts.mean()),
            }
        )
    return {
        "items": n,
        "sid_length": int(codes_after.shape[1]),
        "collision_rate_before": float(1 - len(np.unique(codes_before, axis=0)) / n),
        "collision_rate_after": float(1 - len(np.unique(codes_after, axis=0)) / n),
        "items_moved": n_moved,
        "levels": per_level,
        "items_per_prefix": prefixes,
        "reconstruction_error": recon_error,
        "semantic_coherence": semantic_coherence(emb, codes_after[:, 0], seed=seed),
    }


def quantize(x: np.ndarray, s: SIDSettings) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], float, list[dict]]:
    """Codes of the embeddings by the configured method.

    Returns:
        ``(vectors, codes, codebooks, recon_error, curves)``: the quantised vectors (centred
        embeddings or RQ-VAE latents), ``(N, L)`` codes, per-level codebooks, the relative
        reconstruction error and (RQ-VAE only) the training curves.
    """
    if s.method in ("rkmeans", "rkmeans_balanced"):
        xc = x - x.mean(axis=0, keepdims=True)
        codes, books = residual_kmeans(xc, s, balanced=s.method == "rkmeans_balanced")
        recon = sum(books[lv][codes[:, lv]] for lv in range(s.levels))
        err = float(((xc - recon) ** 2).sum() / max((xc**2).sum(), 1e-12))
        return xc, codes, books, err, []
    if s.method == "rqvae":
        import torch

        from genrec.sids.rqvae import RQVAEConfig, train_rqvae

        cfg = RQVAEConfig.from_settings(s, d_in=x.shape[1])
        xt = torch.as_tensor(x, dtype=torch.float32)
        from genrec.devices import pick_device

        model, curves = train_rqvae(x.astype(np.float32), cfg, device=pick_device())  # CUDA when available
        with torch.no_grad():
            z = model.encode(xt).numpy().astype(np.float64)
            x_hat, _, codes = model(xt)
            err = float(((x_hat - xt) ** 2).sum() / max(float((xt**2).sum()), 1e-12))
        return z, codes.numpy().astype(np.int64), [b.astype(np.float64) for b in model.codebooks()], err, curves
    raise ValueError(f"quantize() does not handle method {s.method!r}")


def build_sids(
    settings: SIDSettings,
    emb_npy: str | os.PathLike[str],
    item_json: str | os.PathLike[str],
    splits: Mapping[str, str | os.PathLike[str]],
    index_json: str | os.PathLike[str],
    stats_json: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    plot_png: str | os.PathLike[str] | None = None,
    source_index: str | os.PathLike[str] | None = None,
) -> None:
    """Build the SID index of a dataset and write it with its quality report and a MiniOneRec-format copy.

    Args:
        settings: method settings.
        emb_npy: item embeddings, one row per item id.
        item_json: the catalogue.
        splits: the ``train``, ``valid`` and ``test`` CSVs, copied with these SIDs into ``dataset_dir``.
        index_json: output ``{dataset}.index.json``.
        stats_json: output ``sid_stats.json``.
        dataset_dir: output directory with the splits and ``info.txt`` carrying these SIDs.
        plot_png: output code-usage (and RQ-VAE training) plot.
        source_index: method ``import``: the index to import (``settings.path``, or the dataset's own
            ``source.index.json``; see :func:`genrec.config.sid_source`).

    Raises:
        ValueError, FileNotFoundError: bad embeddings, too small codebooks, a missing imported index.
    """
    log_settings(log, "build_sids", settings)
    items = read_items(item_json)
    x = load_embeddings(emb_npy, len(items))
    curves: list[dict] = []
    if settings.method == "import":
        if not source_index:
            raise ValueError("sid method import needs source_index, the index.json to import")
        if read_json(source_index, "SID index") == {}:
            raise ValueError(
                f"{source_index}: this dataset ships no SIDs of its own; give the sid method a 'path' to an index.json"
            )
        codes = index_to_codes(load_index(source_index, n_items=len(items), allow_collisions=True))
        unique, extra = add_dedup_level(codes)
        moved, err = int((unique.shape[1] > codes.shape[1]) and (unique[:, -1] > 0).sum()), None
    else:
        if settings.codebook_size**settings.levels < len(items) and settings.dedup == "move":
            raise ValueError(
                f"{len(items)} items cannot get unique SIDs from {settings.levels} levels of "
                f"{settings.codebook_size} codes; raise codebook_size or levels, or use dedup: level"
            )
        vectors, codes, books, err, curves = quantize(x, settings)
        if settings.dedup == "move":
            unique, moved = resolve_collisions(vectors, codes, books)
        else:
            unique, extra = add_dedup_level(codes)
            moved = int((unique[:, -1] > 0).sum()) if unique.shape[1] > codes.shape[1] else 0
    index = codes_to_index(unique)
    check_index(index, len(items))
    stats = sid_stats(codes, unique, x, moved, err, settings.seed)
    if curves:
        stats["training_curve"] = curves
    log.info(
        "SIDs: collision rate %.4f before, %.4f after (%d items moved or numbered)",
        stats["collision_rate_before"],
        stats["collision_rate_after"],
        moved,
    )
    sids = sid_strings(index)
    frames = {}
    for name in SPLITS:
        df = read_split(splits[name], n_items=len(items))
        samples = [Sample(u, tuple(h), t) for u, h, t in zip(df["user_id"], df["history"], df["item_id"])]
        frames[name] = samples_to_frame(samples, items, sids)
    write_dataset(dataset_dir, items, frames, sids)
    if plot_png is not None:
        plot_code_usage(unique, plot_png, curves)
    write_json(stats_json, {"settings": settings.to_dict(), **stats})
    write_json(index_json, {str(i): t for i, t in index.items()}, indent=None)
