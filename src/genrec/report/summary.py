"""The experiment table (one row per cell and baseline, every metric) and the paired comparisons."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence

import pandas as pd

from genrec.io import atomic_path, read_json
from genrec.metrics import KS, holm, paired_bootstrap, per_row, row_ranks

log = logging.getLogger(__name__)

METRIC_COLUMNS = [f"{m}@{k}" for m in ("HR", "NDCG") for k in KS] + ["MRR", "invalid_rate", "n"]
CI_METRICS = ("HR@10", "NDCG@10")  # metrics whose 95% bootstrap interval gets its own columns
COMPARED = ("HR@10", "NDCG@10")  # metrics of the paired comparisons
ID_COLUMNS = ["dataset", "kind", "encoder", "sid", "sft", "rl", "baseline"]


def _data_columns(entry: dict) -> dict:
    """The training data a row's model saw: the fraction of training users kept and the training rows."""
    if "data_stats" not in entry:
        return {"train_fraction": None, "train_rows": None}
    stats = read_json(entry["data_stats"], "data stats")
    return {"train_fraction": stats.get("train_fraction", 1.0), "train_rows": stats.get("train_rows")}


def _rl_columns(cell: dict) -> dict:
    policy = read_json(cell["policy"], "policy file") if "policy" in cell else {}
    return {
        "rl_train_time_s": policy.get("train_time_s"),
        "rl_peak_memory_gb": policy.get("peak_memory_gb"),
        "rl_resumes": policy.get("resumes", 0),
    }


def _metric_columns(m: dict) -> dict:
    out = {"split": m.get("split", "test"), **{k: m.get(k) for k in METRIC_COLUMNS}, "users": m.get("users")}
    out["ci_unit"] = m.get("ci_unit", "row")  # metrics written before user-level intervals resampled rows
    for k in CI_METRICS:
        low, high = (m.get("ci95") or {}).get(k, (None, None))
        out[f"{k}_ci_low"], out[f"{k}_ci_high"] = low, high
    return out


def summarize(
    cells: Sequence[dict], baselines: Sequence[dict], out_csv: str, n_boot: int = 2000, bootstrap: str = "user"
) -> pd.DataFrame:
    """Collect metrics files into ``summary.csv``.

    Every learned model (LLM cell or trained baseline) of a dataset with a ``popularity`` baseline is
    checked against it on the same rows (:func:`below_popularity`): ``below_popularity`` is True when
    its HR@10 or NDCG@10 is below most-popular's beyond the 95% interval of the paired difference, and
    the log warns. Such a model is broken (a baseline stopped on the popularity plateau, an LLM cell
    that did not learn), and a comparison against it flatters whatever beats it.

    Args:
        cells: per cell ``{"dataset", "encoder", "sid", "sft", "rl", "metrics", "results", "sid_stats",
            "train_log"}`` (file paths but the names), optionally ``data_stats`` (for ``train_fraction``)
            and ``policy`` (the RL stage's ``policy.json``, for its train time and peak memory).
        baselines: per baseline ``{"dataset", "baseline", "metrics", "results"}``, optionally ``data_stats``.
        out_csv: the table to write (atomically).
        n_boot, bootstrap: the popularity check's resamples and unit (``eval.bootstrap``).

    Returns:
        The table.
    """
    flags = below_popularity(cells, baselines, n_boot, bootstrap)
    rows = []
    for c in cells:
        m = read_json(c["metrics"], "metrics file")
        sid = read_json(c["sid_stats"], "SID stats file")
        train = read_json(c["train_log"], "SFT train log")
        rows.append(
            {
                "dataset": c["dataset"],
                "kind": "llm",
                "encoder": c["encoder"],
                "sid": c["sid"],
                "sft": c["sft"],
                "rl": c["rl"],
                "baseline": "",
                **_data_columns(c),
                **_metric_columns(m),
                "sid_collision_rate_before": sid["collision_rate_before"],
                "sid_collision_rate_after": sid["collision_rate_after"],
                "sid_length": sid["sid_length"],
                "sid_level_a_codes_used": sid["levels"][0]["codes_used"],
                "sid_level_a_entropy_bits": sid["levels"][0]["entropy_bits"],
                "sid_reconstruction_error": sid["reconstruction_error"],
                "sid_coherence_same_code": sid["semantic_coherence"]["same_code_cosine"],
                "sid_coherence_random": sid["semantic_coherence"]["random_cosine"],
                "sft_train_time_s": train["train_time_s"],
                "sft_peak_memory_gb": train["peak_memory_gb"],
                "sft_resumes": train.get("resumes", 0),
                **_rl_columns(c),
                "eval_users_per_s": m.get("users_per_s"),
                "eval_peak_memory_gb": m.get("peak_memory_gb"),
                "below_popularity": flags.get(id(c)),
            }
        )
    for b in baselines:
        m = read_json(b["metrics"], "metrics file")
        train = m.get("train") or {}  # the trained baselines' selection figures
        rows.append(
            {
                "dataset": b["dataset"],
                "kind": "baseline",
                "encoder": "",
                "sid": "",
                "sft": "",
                "rl": "",
                "baseline": b["baseline"],
                **_data_columns(b),
                **_metric_columns(m),
                "baseline_train_time_s": train.get("train_time_s"),
                "baseline_best_epoch": train.get("best_epoch"),
                "baseline_epochs": train.get("epochs"),
                "eval_users_per_s": m.get("users_per_s"),
                "below_popularity": flags.get(id(b)),
            }
        )
    table = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    log.info("summary of %d cells and %d baselines written to %s", len(cells), len(baselines), out_csv)
    return table


def _cell_name(c: dict) -> str:
    return f"{c['encoder']}-{c['sid']}-{c['sft']}-{c['rl']}"


def _per_row_values(results_json: str, what: str) -> tuple[list[tuple], dict[str, list[float]], int]:
    """Row keys, per-row values of the compared metrics, and the file's list length (its longest list).

    Read once per version of the file: the summary's popularity check and the comparisons read the same
    result files (callers must not change what it returns).
    """
    try:
        stat = os.stat(results_json)
    except OSError:
        return _read_per_row_values(results_json, what, None)  # read_json names the missing file
    return _read_per_row_values(results_json, what, (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _read_per_row_values(results_json: str, what: str, version) -> tuple[list[tuple], dict[str, list[float]], int]:
    rows = read_json(results_json, what)
    ranks = row_ranks(rows)
    length = max((len(r["predict_items"]) for r in rows), default=0)
    return [(str(r.get("user_id")), r["item_id"]) for r in rows], {m: per_row(ranks, m) for m in COMPARED}, length


def _cutoff(metric: str) -> int:
    return int(metric.split("@")[1]) if "@" in metric else 0


def _paired(mine, theirs, where: str):
    """The two result lists on their common test rows: equal keys, or one list the leading part of the other
    (an LLM cell evaluated with ``eval.max_users`` covers the first N rows of the split).

    Raises:
        ValueError: neither.
    """
    (a_keys, a, _), (b_keys, b, _) = mine, theirs
    n = min(len(a_keys), len(b_keys))
    if a_keys[:n] != b_keys[:n]:
        raise ValueError(f"{where}: the two result files do not cover the same test rows in the same order")
    return n, {m: v[:n] for m, v in a.items()}, {m: v[:n] for m, v in b.items()}


def below_popularity(
    cells: Sequence[dict], baselines: Sequence[dict], n_boot: int = 2000, bootstrap: str = "user"
) -> dict[int, bool]:
    """Which learned models score below their dataset's most-popular baseline on the same rows.

    Returns:
        ``id(entry) -> flag`` for every cell and every baseline other than ``popularity`` of a dataset
        that has a ``popularity`` baseline: True when the paired difference in HR@10 or NDCG@10 (the
        model minus most-popular, users resampled unless ``bootstrap`` is ``row``) has its whole 95%
        interval below 0. Entries of a dataset without one are absent (the column is left empty).
    """
    popular = {
        b["dataset"]: (b, _per_row_values(b["results"], "popularity results"))
        for b in baselines
        if b["baseline"] == "popularity"
    }
    flags = {}
    for entry in [*cells, *baselines]:
        reference, theirs = popular.get(entry["dataset"], (None, None))
        if reference is None or entry is reference:
            continue
        name = entry.get("baseline") or _cell_name(entry)
        mine = _per_row_values(entry["results"], "results")
        n, a, b = _paired(mine, theirs, f"{name} vs popularity")
        users = [u for u, _ in mine[0][:n]] if bootstrap == "user" else None
        below = {m: paired_bootstrap(a[m], b[m], n_boot=n_boot, groups=users) for m in COMPARED}
        flags[id(entry)] = any(v["ci_high"] < 0 for v in below.values())
        if flags[id(entry)]:
            log.warning(
                "%s/%s scores below most-popular on the same %d rows (%s): it did not learn, or stopped on the "
                "popularity plateau; comparisons against it are not meaningful",
                entry["dataset"], name, n,
                ", ".join(f"{m} {v['diff']:+.4f} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]" for m, v in below.items()),
            )  # fmt: skip
    return flags


def compare(
    cells: Sequence[dict], baselines: Sequence[dict], out_csv: str, n_boot: int = 2000, bootstrap: str = "user"
) -> pd.DataFrame:
    """Paired bootstrap comparisons of each LLM cell with its SFT parent and with the best baseline.

    The SFT parent of a cell is the cell with the same dataset, encoder, SID and SFT variant and
    ``rl == "none"`` (compared only when it is in the matrix and differs from the cell). The best
    baseline is the dataset's baseline with the highest test HR@10: a post-hoc choice that favours
    the baseline, so it makes the comparison conservative. Rows are paired by (user, item); when a
    cell was evaluated on the first ``eval.max_users`` rows only, the comparison uses those rows
    (``n``). Any other mismatch is an error.

    The bootstrap resamples users (each with all of their paired rows) unless ``bootstrap`` is
    ``row``. When the best baseline is ``popularity``, ``reference_is_popularity`` says so (and the log
    warns): the learned baselines did not beat it, which usually means they did not train.
    Every comparison of the file is one family for Holm's adjustment: ``p_holm`` controls
    the chance of any false finding among them, ``family_size`` says how many there are and
    ``cells_compared`` how many LLM cells they cover. Report ``p_holm`` when several comparisons are read
    together (a matrix of cells); ``p_value`` only for one comparison named before the run.

    Args:
        cells, baselines: as for :func:`summarize`, each with ``results`` (its ``eval_results.json``).
        out_csv: ``comparisons.csv`` (written atomically): one row per (cell, reference, metric) with
            ``diff`` (cell minus reference), its 95% interval, the two-sided bootstrap p-value and its
            Holm adjustment, and the resampling unit.
        bootstrap: ``user`` or ``row`` (``eval.bootstrap``).

    Raises:
        ValueError: two result files do not cover the same test rows in the same order.
    """
    values = {id(c): _per_row_values(c["results"], "cell results") for c in cells}
    base_values = {(b["dataset"], b["baseline"]): _per_row_values(b["results"], "baseline results") for b in baselines}
    best: dict[str, tuple[str, float]] = {}  # dataset -> (baseline, its HR@10 hits); the first wins a tie
    for (dataset, name), (_, columns, _) in base_values.items():
        hits = sum(columns["HR@10"])
        if dataset not in best or hits > best[dataset][1]:
            best[dataset] = (name, hits)
    for dataset, (name, _) in best.items():
        if name == "popularity" and sum(d == dataset for d, _ in base_values) > 1:
            log.warning("%s: the best baseline is most-popular; the learned baselines did not beat it", dataset)
    parents = {(c["dataset"], c["encoder"], c["sid"], c["sft"]): c for c in cells if c["rl"] == "none"}
    rows = []
    for c in cells:
        refs = []
        parent = parents.get((c["dataset"], c["encoder"], c["sid"], c["sft"]))
        if parent is not None and parent is not c:
            refs.append(("sft_parent", _cell_name(parent), values[id(parent)]))
        if c["dataset"] in best:
            name = best[c["dataset"]][0]
            refs.append(("best_baseline", name, base_values[(c["dataset"], name)]))
        for kind, ref_name, ref_values in refs:
            n, mine, theirs = _paired(values[id(c)], ref_values, f"{_cell_name(c)} vs {ref_name}")
            row_users = [u for u, _ in values[id(c)][0][:n]]
            users = row_users if bootstrap == "user" else None
            for metric in COMPARED:
                shortest = min(values[id(c)][2], ref_values[2])
                if _cutoff(metric) > shortest:  # a list cut short would count its missing tail as misses
                    log.warning(
                        "%s vs %s: %s not compared, a ranked list has only %d items (raise eval.top_k/num_beams "
                        "or the baseline's top_k)",
                        _cell_name(c),
                        ref_name,
                        metric,
                        shortest,
                    )
                    continue
                boot = paired_bootstrap(mine[metric], theirs[metric], n_boot=n_boot, groups=users)
                rows.append(
                    {
                        "dataset": c["dataset"],
                        "cell": _cell_name(c),
                        "reference_kind": kind,
                        "reference": ref_name,
                        "metric": metric,
                        **boot,
                        "n": n,
                        "users": len(set(row_users)),
                        "ci_unit": bootstrap,
                        "reference_is_popularity": ref_name == "popularity",
                    }
                )
    compared = len({(r["dataset"], r["cell"]) for r in rows})
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row.update(p_holm=adjusted, family_size=len(rows), cells_compared=compared)
    columns = [
        "dataset", "cell", "reference_kind", "reference", "metric", "diff", "ci_low", "ci_high", "p_value",
        "p_holm", "family_size", "cells_compared", "n", "users", "ci_unit", "reference_is_popularity",
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    log.info("%d paired comparisons written to %s", len(table), out_csv)
    return table
