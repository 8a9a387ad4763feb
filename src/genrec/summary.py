"""The experiment table: one row per cell and baseline, every metric."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from genrec.io import atomic_path, read_json
from genrec.metrics import KS

log = logging.getLogger(__name__)

METRIC_COLUMNS = [f"{m}@{k}" for m in ("HR", "NDCG") for k in KS] + ["MRR", "invalid_rate", "n"]
ID_COLUMNS = ["dataset", "kind", "encoder", "sid", "sft", "rl", "baseline"]


def summarize(cells: Sequence[dict], baselines: Sequence[dict], out_csv: str) -> pd.DataFrame:
    """Collect metrics files into ``summary.csv``.

    Args:
        cells: per cell ``{"dataset", "encoder", "sid", "sft", "rl", "metrics", "sid_stats", "train_log"}``
            (the last three are file paths).
        baselines: per baseline ``{"dataset", "baseline", "metrics"}``.
        out_csv: the table to write (atomically).

    Returns:
        The table.
    """
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
                **{k: m.get(k) for k in METRIC_COLUMNS},
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
                "eval_users_per_s": m.get("users_per_s"),
            }
        )
    for b in baselines:
        m = read_json(b["metrics"], "metrics file")
        rows.append(
            {
                "dataset": b["dataset"],
                "kind": "baseline",
                "encoder": "",
                "sid": "",
                "sft": "",
                "rl": "",
                "baseline": b["baseline"],
                **{k: m.get(k) for k in METRIC_COLUMNS},
            }
        )
    table = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    log.info("summary of %d cells and %d baselines written to %s", len(cells), len(baselines), out_csv)
    return table
