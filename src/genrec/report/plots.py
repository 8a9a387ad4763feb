"""Every figure of the pipeline (PNG, written atomically): the experiment's and each stage's own.

The experiment's figures are drawn from ``summary.csv`` and ``comparisons.csv``; :func:`plot_all`
writes them all (rule ``plots``). A figure whose comparison the matrix does not contain (no RL
cell, a single SID method) says so on the canvas instead of being left out, so that the report
always has the same set of figures. The stages draw theirs with :func:`plot_loss` (SFT),
:func:`plot_rl_log` (GRPO) and :func:`plot_code_usage` (SIDs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from genrec.io import atomic_path
from genrec.metrics import KS

FIGURES = ("methods", "sft_vs_rl", "metric_vs_k", "sid_methods", "data_scale")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def row_label(row: pd.Series) -> str:
    """``encoder-sid-sft-rl`` for an LLM cell, the baseline's name otherwise."""
    if row["kind"] == "baseline":
        return str(row["baseline"])
    return f"{row['encoder']}-{row['sid']}-{row['sft']}-{row['rl']}"


def method_labels(rows: pd.DataFrame) -> tuple[list[str], list[bool]]:
    """Each row's label, marked when the summary flags it ``below_popularity``, and the flags."""
    column = rows["below_popularity"] if "below_popularity" in rows else pd.Series(False, index=rows.index)
    flagged = [v is True or v == "True" for v in column.astype(object)]
    return [
        row_label(r) + ("\n(below most-popular)" if f else "") for (_, r), f in zip(rows.iterrows(), flagged)
    ], flagged


def _save(fig, path: str | os.PathLike[str], dpi: int = 100) -> None:
    """Lay out, write atomically as PNG, and close."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _plt().close(fig)


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_axis_off()


def _errorbars(ax, rows: pd.DataFrame, metric: str, offset: float, width: float, label: str) -> None:
    x = np.arange(len(rows)) + offset
    low = (rows[metric] - rows[f"{metric}_ci_low"]).fillna(0).clip(lower=0)  # float noise can make it -1e-16
    high = (rows[f"{metric}_ci_high"] - rows[metric]).fillna(0).clip(lower=0)
    ax.bar(x, rows[metric], width, yerr=[low, high], capsize=3, label=label)


def plot_methods(summary: pd.DataFrame, path: str) -> None:
    """HR@10 and NDCG@10 with 95% intervals for every cell and baseline, one panel per dataset; a model
    flagged ``below_popularity`` in the summary has its label in red, marked so."""
    plt = _plt()
    datasets = sorted(summary["dataset"].unique())
    fig, axes = plt.subplots(
        len(datasets),
        1,
        figsize=(max(7, 1.3 * summary["dataset"].value_counts().max()), 3.8 * len(datasets)),
        squeeze=False,
    )
    for ax, d in zip(axes[:, 0], datasets):
        rows = summary[summary["dataset"] == d].reset_index(drop=True)
        _errorbars(ax, rows, "HR@10", -0.2, 0.4, "HR@10")
        _errorbars(ax, rows, "NDCG@10", 0.2, 0.4, "NDCG@10")
        labels, flagged = method_labels(rows)
        ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right")
        for tick, f in zip(ax.get_xticklabels(), flagged):
            if f:
                tick.set_color("tab:red")
        ax.set_title(f"{d}: HR@10 and NDCG@10 with 95% bootstrap intervals", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_sft_vs_rl(comparisons: pd.DataFrame, path: str) -> None:
    """The change of HR@10 and NDCG@10 from each RL cell's SFT parent, with 95% intervals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    rows = comparisons[comparisons["reference_kind"] == "sft_parent"]
    if rows.empty:
        _note(ax, "no RL cell in this matrix: nothing to compare with its SFT parent")
    else:
        for i, metric in enumerate(("HR@10", "NDCG@10")):
            r = rows[rows["metric"] == metric].reset_index(drop=True)
            x = [j + (i - 0.5) * 0.4 for j in range(len(r))]
            err = [(r["diff"] - r["ci_low"]).clip(lower=0), (r["ci_high"] - r["diff"]).clip(lower=0)]
            ax.errorbar(x, r["diff"], yerr=err, fmt="o", capsize=3, label=metric)
            ax.set_xticks(range(len(r)), r["cell"], rotation=20, ha="right")
        ax.axhline(0, color="grey", lw=1)
        ax.set_ylabel("RL minus SFT")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    ax.set_title("SFT vs RL per cell (paired bootstrap, 95% intervals)")
    _save(fig, path)


def plot_metric_vs_k(summary: pd.DataFrame, path: str) -> None:
    """HR@K and NDCG@K against K for every row."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, ax in zip(("HR", "NDCG"), axes):
        for _, row in summary.iterrows():
            ks = [k for k in KS if pd.notna(row.get(f"{name}@{k}"))]
            ax.plot(ks, [row[f"{name}@{k}"] for k in ks], "o-", label=f"{row['dataset']}: {row_label(row)}")
        ax.set_xscale("log")
        ax.set_xticks(list(KS), [str(k) for k in KS])
        ax.set_xlabel("K")
        ax.set_ylabel(f"{name}@K")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("metric against list length K")
    _save(fig, path)


def plot_sid_methods(summary: pd.DataFrame, path: str) -> None:
    """HR@10 with intervals and the level-a code entropy of each SID method (LLM cells)."""
    plt = _plt()
    llm = summary[summary["kind"] == "llm"]
    if llm["sid"].nunique() < 2:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        _note(ax, f"one SID method in this matrix ({', '.join(llm['sid'].unique())}): nothing to compare")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        by = llm.groupby("sid")
        best = by["HR@10"].idxmax()
        rows = llm.loc[best].reset_index(drop=True)
        _errorbars(axes[0], rows, "HR@10", 0, 0.6, "HR@10 (best cell per SID method)")
        axes[0].set_xticks(range(len(rows)), rows["sid"])
        axes[0].legend()
        axes[1].bar(range(len(rows)), rows["sid_level_a_entropy_bits"])
        axes[1].set_xticks(range(len(rows)), rows["sid"])
        axes[1].set_ylabel("level-a code entropy (bits)")
        for ax in axes:
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("SID method comparison")
    _save(fig, path)


def plot_data_scale(summary: pd.DataFrame, path: str) -> None:
    """HR@10 and NDCG@10 against the share of training users, when the matrix varies it."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if "train_fraction" not in summary or summary["train_fraction"].dropna().nunique() < 2:
        _note(ax, "the matrix does not vary the training-data fraction (datasets.<d>.train_fraction)")
    else:
        for label, rows in summary.groupby(summary.apply(row_label, axis=1)):
            rows = rows.sort_values("train_fraction")
            ax.errorbar(
                rows["train_fraction"],
                rows["HR@10"],
                yerr=[
                    (rows["HR@10"] - rows["HR@10_ci_low"]).clip(lower=0),
                    (rows["HR@10_ci_high"] - rows["HR@10"]).clip(lower=0),
                ],
                fmt="o-",
                capsize=3,
                label=label,
            )
        ax.set_xlabel("share of training users")
        ax.set_ylabel("HR@10")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax.set_title("data scale")
    _save(fig, path)


def plot_all(summary_csv: str, comparisons_csv: str, paths: Mapping[str, str]) -> list[str]:
    """Write every figure of :data:`FIGURES` to its path in ``paths`` (figure name -> PNG) and return the paths.

    Raises:
        ValueError: ``paths`` does not name exactly the figures of :data:`FIGURES`.
    """
    if sorted(paths) != sorted(FIGURES):
        raise ValueError(f"plot_all draws {list(FIGURES)}; got paths for {sorted(paths)}")
    summary = pd.read_csv(summary_csv, keep_default_na=True)
    comparisons = pd.read_csv(comparisons_csv)
    plot_methods(summary, paths["methods"])
    plot_sft_vs_rl(comparisons, paths["sft_vs_rl"])
    plot_metric_vs_k(summary, paths["metric_vs_k"])
    plot_sid_methods(summary, paths["sid_methods"])
    plot_data_scale(summary, paths["data_scale"])
    return [paths[name] for name in FIGURES]


# ----------------------------------------------------------------------------- stage figures
def plot_loss(train_curve: list[dict], eval_curve: list[dict], path: str) -> None:
    """Training and validation loss against the optimizer step, as a PNG (written atomically)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train_curve:
        ax.plot([p["step"] for p in train_curve], [p["loss"] for p in train_curve], label="train (response tokens)")
    if eval_curve:
        ax.plot([p["step"] for p in eval_curve], [p["loss"] for p in eval_curve], "o-", label="validation (next_sid)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(os.path.basename(os.path.dirname(os.path.abspath(path))) or "SFT loss")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def _series(steps: list[dict], key: str) -> list[float]:
    return [math.nan if s.get(key) is None else s[key] for s in steps]


def plot_rl_log(steps: list[dict], kinds: Sequence[str], path: str) -> None:
    """Rewards per kind, KL, learning rate and time per step, as a PNG (written atomically)."""
    plt = _plt()
    x = [s["step"] for s in steps]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6))
    ax = axes[0][0]
    for kind in kinds:
        ax.plot(x, _series(steps, f"reward_{kind}_mean"), ".-", label=kind)
    ax.plot(x, _series(steps, "reward_mean"), "k.--", label="weighted total")
    ax.set_title("reward (mean over rollouts)")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    ax.plot(x, _series(steps, "kl"), label="KL to SFT")
    ax.plot(x, _series(steps, "clip_ratio"), label="clip ratio")
    ax.set_title("KL and clip ratio")
    ax.legend(fontsize=8)
    ax = axes[1][0]
    ax.plot(x, _series(steps, "learning_rate"))
    ax.set_title("learning rate")
    ax = axes[1][1]
    ax.plot(x, _series(steps, "rollout_s"), label="rollout (decoding)")
    ax.plot(x, _series(steps, "update_s"), label="update (scoring, loss, step)")
    ax.set_title("seconds per step")
    ax.legend(fontsize=8)
    for a in axes.flat:
        a.set_xlabel("optimizer step")
        a.grid(alpha=0.3)
    _save(fig, path)


def plot_code_usage(codes: np.ndarray, path: str | os.PathLike[str], curves: list[dict] | None = None) -> None:
    """A PNG of items per code at every level (and the RQ-VAE training curves when given)."""
    plt = _plt()
    levels = codes.shape[1]
    cols = levels + (2 if curves else 0)
    fig, axes = plt.subplots(1, cols, figsize=(3.2 * cols, 3), squeeze=False)
    for lv in range(levels):
        counts = np.sort(np.bincount(codes[:, lv]))[::-1]
        axes[0, lv].bar(np.arange(len(counts)), counts, width=1.0)
        axes[0, lv].set(title=f"level {chr(97 + lv)}: items per code", xlabel="code (sorted)", ylabel="items")
    if curves:
        ep = [c["epoch"] for c in curves]
        ax = axes[0, levels]
        for key in ("loss", "recon", "quant"):
            ax.plot(ep, [c[key] for c in curves], label=key)
        ax.set(title="RQ-VAE losses", xlabel="epoch", yscale="log")
        ax.legend()
        axes[0, levels + 1].plot(ep, [c["collision_rate"] for c in curves])
        axes[0, levels + 1].set(title="collision rate", xlabel="epoch")
    _save(fig, path, dpi=80)
