"""The general LLM track's table and figures: ``results/llm/results_summary.csv`` and its two plots.

One row per cell (instruction dataset x base model x method x data scale) from the cell's
``metrics.json`` (:func:`genrec.llm.generate.evaluate_chat`): ROUGE-1/2/L and BLEU with their 95%
intervals (test examples resampled), the training figures (time, peak memory, trainable
parameters, losses) and inference speed. ``data_scale_comparison.png`` draws each metric against
the number of training examples, one line per method; ``method_comparison.png`` sets the methods
side by side at the largest scale: quality, training time, peak memory, trainable share and speed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from genrec.io import atomic_path, read_json
from genrec.metrics import TEXT_METRICS
from genrec.report.plots import _note, _plt, _save

log = logging.getLogger(__name__)

LLM_FIGURES = ("data_scale_comparison", "method_comparison")
KEYS = ("data", "model", "method", "scale")


def llm_summary(cells: Sequence[Mapping[str, str]], out_csv: str) -> pd.DataFrame:
    """Write ``results_summary.csv``: one row per cell, from each cell's ``metrics.json``.

    Args:
        cells: per cell its ``data``, ``model``, ``method``, ``scale`` and the path of its ``metrics``.

    Raises:
        ValueError: no cells, or a metrics file without the training figures.
    """
    if not cells:
        raise ValueError("no cells: the config has no llm_experiments")
    rows = []
    for c in cells:
        m = read_json(c["metrics"], "cell metrics")
        if "training" not in m:
            raise ValueError(f"{c['metrics']} has no training figures: evaluate the cell with its train_log")
        t = m["training"]
        row = {k: c[k] for k in KEYS}
        row["mode"] = t.get("mode", "")
        row["train_examples"] = t["train_examples"]
        for metric in TEXT_METRICS:
            row[metric] = m[metric]
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = m["ci95"][metric]
        row.update(
            n_test=m["n"],
            train_time_s=t["train_time_s"],
            train_peak_memory_gb=t["peak_memory_gb"],
            trainable_params=t["trainable_params"],
            total_params=t["total_params"],
            trainable_pct=100 * t["trainable_params"] / t["total_params"],
            train_samples_per_s=t["samples_per_s"],
            first_loss=t["first_loss"],
            last_loss=t["last_loss"],
            valid_loss=t["valid_loss"],
            infer_samples_per_s=m["samples_per_s"],
            infer_tokens_per_s=m["tokens_per_s"],
            infer_peak_memory_gb=m["peak_memory_gb"],
            max_new_tokens=m["decoding"]["max_new_tokens"],
            device=t["device"],
        )
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["data", "model", "method", "train_examples"], kind="stable")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    log.info("%d cells -> %s", len(table), out_csv)
    return table


def _series_label(row: pd.Series, many_models: bool, many_data: bool) -> str:
    parts = [str(row["method"])]
    if many_models:
        parts.append(str(row["model"]))
    if many_data:
        parts.append(str(row["data"]))
    return " / ".join(parts)


def plot_data_scale_comparison(table: pd.DataFrame, path: str) -> None:
    """ROUGE-1/2/L and BLEU (with 95% intervals) against training examples, one line per method."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    many_models, many_data = table["model"].nunique() > 1, table["data"].nunique() > 1
    labels = table.apply(_series_label, axis=1, args=(many_models, many_data))
    for ax, metric in zip(axes.flat, TEXT_METRICS):
        for label, rows in table.groupby(labels, sort=True):
            rows = rows.sort_values("train_examples")
            ax.errorbar(
                rows["train_examples"],
                rows[metric],
                yerr=[
                    (rows[metric] - rows[f"{metric}_ci_low"]).clip(lower=0),
                    (rows[f"{metric}_ci_high"] - rows[metric]).clip(lower=0),
                ],
                fmt="o-",
                capsize=3,
                label=label,
            )
        if table["train_examples"].nunique() > 1:
            ax.set_xscale("log")
            ax.minorticks_off()
            scales = sorted(table["train_examples"].unique())
            ax.set_xticks(scales, [str(n) for n in scales])
        ax.set_xlabel("training examples")
        ax.set_ylabel(f"{metric} (0-100)")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("data scale: test-set quality by training examples (95% intervals, examples resampled)")
    _save(fig, path)


def plot_method_comparison(table: pd.DataFrame, path: str) -> None:
    """The methods side by side at each series' largest data scale: quality and cost."""
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    top = table.loc[table.groupby(["data", "model", "method"])["train_examples"].idxmax()]
    many_models, many_data = top["model"].nunique() > 1, top["data"].nunique() > 1
    labels = list(top.apply(_series_label, axis=1, args=(many_models, many_data)))
    x = np.arange(len(top))
    ax = axes.flat[0]
    width = 0.8 / len(TEXT_METRICS)
    for j, metric in enumerate(TEXT_METRICS):
        low = (top[metric] - top[f"{metric}_ci_low"]).clip(lower=0)
        high = (top[f"{metric}_ci_high"] - top[metric]).clip(lower=0)
        ax.bar(x + (j - 1.5) * width, top[metric], width, yerr=[low, high], capsize=2, label=metric)
    ax.set_title("quality (95% intervals)")
    ax.legend(fontsize=7)
    panels = [
        ("train_time_s", "training time (s)"),
        ("train_peak_memory_gb", "peak training memory (GB)"),
        ("trainable_pct", "trainable parameters (%)"),
        ("infer_tokens_per_s", "inference tokens/s"),
        ("last_loss", "last training loss"),
    ]
    for ax, (column, title) in zip(axes.flat[1:], panels):
        if top[column].isna().all():
            _note(ax, f"no {title}")
            continue
        ax.bar(x, top[column], 0.6)
        ax.set_title(title)
    device = ", ".join(sorted(map(str, top["device"].unique())))
    for ax in axes.flat:
        if ax.axison:
            ax.set_xticks(x, labels, rotation=20, fontsize=8)
            ax.grid(alpha=0.3, axis="y")
    scales = ", ".join(sorted({str(s) for s in top["train_examples"]}, key=int))
    fig.suptitle(f"methods at the largest data scale ({scales} training examples; {device})")
    _save(fig, path)


def plot_llm(summary_csv: str, paths: Mapping[str, str]) -> list[str]:
    """Write both figures of :data:`LLM_FIGURES` from ``results_summary.csv``.

    Raises:
        ValueError: ``paths`` does not name exactly the figures of :data:`LLM_FIGURES`.
    """
    if sorted(paths) != sorted(LLM_FIGURES):
        raise ValueError(f"plot_llm draws {list(LLM_FIGURES)}; got paths for {sorted(paths)}")
    table = pd.read_csv(summary_csv)
    plot_data_scale_comparison(table, paths["data_scale_comparison"])
    plot_method_comparison(table, paths["method_comparison"])
    return [paths[name] for name in LLM_FIGURES]
