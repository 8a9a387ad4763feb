"""Building semantic IDs from item embeddings: residual k-means with collision resolution.

Residual k-means (RQ-KMeans) quantises each embedding level by level: level ``l`` clusters
the residual left by levels ``< l`` into ``codebook_size`` centroids. Items whose full code
coincides are then separated by :func:`resolve_collisions`, which moves every colliding item
but one to the nearest free code (searched level by level in order of distance, so a moved
item keeps as much of its prefix as capacity allows). The result is unique by construction,
unlike MiniOneRec's Sinkhorn re-assignment, which gives up after 20 rounds.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter

import numpy as np
from sklearn.cluster import KMeans

from genrec.data.format import SPLITS, Sample, read_items, read_split, samples_to_frame, write_dataset
from genrec.io import write_json
from genrec.logs import log_settings
from genrec.settings import SIDSettings
from genrec.sids import check_index, codes_to_index, sid_strings

log = logging.getLogger(__name__)


def load_embeddings(path: str | os.PathLike[str], n_items: int) -> np.ndarray:
    """Load an ``(N, d)`` embedding file and check it against the catalogue.

    Raises:
        FileNotFoundError, ValueError: missing file, wrong row count, or NaN/inf rows.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embedding file not found: {path}")
    emb = np.load(path)
    if emb.ndim != 2 or emb.shape[0] != n_items:
        raise ValueError(
            f"{path} has shape {emb.shape}, expected ({n_items}, d): one row per item id; "
            "re-run embed_items for this dataset"
        )
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: rows {bad[:10].tolist()} contain NaN/inf; fix the encoder or item text")
    return emb.astype(np.float64)


def residual_kmeans(x: np.ndarray, s: SIDSettings) -> tuple[np.ndarray, list[np.ndarray]]:
    """Residual k-means codes.

    Args:
        x: ``(N, d)`` embeddings.
        s: levels, codebook size, iterations, restarts and seed.

    Returns:
        ``codes`` ``(N, levels)`` int64 and one ``(K_l, d)`` centroid array per level
        (``K_l < codebook_size`` only when fewer distinct residuals exist).
    """
    residual = x - x.mean(axis=0, keepdims=True)
    codes, centroids = [], []
    for level in range(s.levels):
        k = min(s.codebook_size, len(np.unique(residual.round(12), axis=0)))
        km = KMeans(n_clusters=k, n_init=s.n_init, max_iter=s.kmeans_iters, random_state=s.seed + level)
        labels = km.fit_predict(residual)
        centroids.append(km.cluster_centers_)
        codes.append(labels)
        residual = residual - km.cluster_centers_[labels]
        log.info("level %d: %d codes used of %d", level, len(np.unique(labels)), k)
    return np.stack(codes, axis=1).astype(np.int64), centroids


def resolve_collisions(x: np.ndarray, codes: np.ndarray, centroids: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Give every item a unique code, moving colliding items to their nearest free code.

    In each group of items sharing a full code, the item closest to the code keeps it; each
    other item (in id order) takes the first free code of a depth-first search that visits the
    codes of each level in order of distance to that item's residual.

    Args:
        x: ``(N, d)`` embeddings (centred as in :func:`residual_kmeans` is not required).
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
            f"({math.prod(sizes)} codes); raise codebook_size or levels"
        )
    xc = x - x.mean(axis=0, keepdims=True)
    recon = sum(centroids[lv][codes[:, lv]] for lv in range(levels))
    err = ((xc - recon) ** 2).sum(axis=1)
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
        new = _nearest_free(xc[i], (), 0, centroids, counts, capacity)
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


def sid_stats(codes_before: np.ndarray, codes_after: np.ndarray, sizes: list[int], n_moved: int) -> dict:
    """Collision rate before/after, and per-level codebook utilisation and entropy."""
    n = len(codes_before)
    per_level = []
    for lv, k in enumerate(sizes):
        counts = np.bincount(codes_after[:, lv], minlength=k)
        p = counts[counts > 0] / n
        per_level.append(
            {
                "codebook_size": k,
                "codes_used": int((counts > 0).sum()),
                "utilisation": float((counts > 0).mean()),
                "entropy_bits": float(-(p * np.log2(p)).sum()),
                "max_items_per_code": int(counts.max()),
            }
        )
    return {
        "items": n,
        "collision_rate_before": float(1 - len({tuple(r) for r in codes_before.tolist()}) / n),
        "collision_rate_after": float(1 - len({tuple(r) for r in codes_after.tolist()}) / n),
        "items_moved": n_moved,
        "levels": per_level,
    }


def build_sids(
    settings: SIDSettings,
    emb_npy: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    index_json: str | os.PathLike[str],
    stats_json: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
) -> None:
    """Build the SID index of a dataset and write it with its stats and a MiniOneRec-format copy.

    Args:
        settings: method settings.
        emb_npy: item embeddings, one row per item id.
        data_dir: the prepared dataset (``item.json`` and the split CSVs).
        index_json: output ``{dataset}.index.json``.
        stats_json: output ``sid_stats.json``.
        dataset_dir: output directory with the splits and ``info.txt`` carrying these SIDs.
    """
    log_settings(log, "build_sids", settings)
    items = read_items(os.path.join(data_dir, "item.json"))
    x = load_embeddings(emb_npy, len(items))
    if settings.codebook_size**settings.levels < len(items):
        raise ValueError(
            f"{len(items)} items cannot get unique SIDs from {settings.levels} levels of "
            f"{settings.codebook_size} codes; raise codebook_size or levels"
        )
    codes, centroids = residual_kmeans(x, settings)
    unique, moved = resolve_collisions(x, codes, centroids)
    index = codes_to_index(unique)
    check_index(index, len(items))
    stats = sid_stats(codes, unique, [len(c) for c in centroids], moved)
    log.info(
        "SIDs: collision rate %.4f before, %.4f after (%d items moved)",
        stats["collision_rate_before"],
        stats["collision_rate_after"],
        moved,
    )
    sids = sid_strings(index)
    splits = {}
    for name in SPLITS:
        df = read_split(os.path.join(data_dir, f"{name}.csv"), n_items=len(items))
        samples = [Sample(u, tuple(h), t) for u, h, t in zip(df["user_id"], df["history"], df["item_id"])]
        splits[name] = samples_to_frame(samples, items, sids)
    write_dataset(dataset_dir, items, splits, sids)
    write_json(stats_json, {"settings": settings.to_dict(), **stats})
    write_json(index_json, {str(i): t for i, t in index.items()}, indent=None)
