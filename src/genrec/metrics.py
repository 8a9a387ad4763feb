"""Ranking metrics: the one definition used by every model and baseline.

Each test row has one relevant item. With ``r`` the 0-based position of the target in the
ranked list (absent = miss):

* ``HR@K``   = mean of 1[r < K]
* ``NDCG@K`` = mean of 1[r < K] / log2(r + 2)   (IDCG = 1 with one relevant item)
* ``MRR``    = mean of 1 / (r + 1), 0 for a miss, over the whole list (its length is reported)
* ``invalid_rate`` = share of predicted entries that are not a SID of the index
* ``ci95``   = 95% percentile bootstrap interval of each mean (2,000 resamples, seed 0)

Intervals and paired tests resample **users**, each with all of their rows (a cluster bootstrap):
a user contributes several test rows (up to 13 in the synthetic default), and rows of one user are
alike, so resampling rows as if independent gives intervals that are too narrow. The mean of a
resample is the total over its users' rows divided by their row count. With one row per user it is
the row bootstrap, draw for draw. ``unit="row"`` keeps the row bootstrap as an option (``eval.bootstrap``).
Where several comparisons are reported together, :func:`holm` adjusts their p-values.

Text generation (the general LLM track) is scored by :func:`text_metrics`: ROUGE-1/2/L F-measures
(rouge-score) and corpus BLEU (sacrebleu), both on 0-100 and both over the tokens of
:func:`text_tokens`, which splits Chinese, Japanese and Korean text into characters and other text
into lower-cased words, so the scores mean the same for either; 95% intervals resample examples.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence

KS = (1, 3, 5, 10, 20)
BOOTSTRAP_UNITS = ("user", "row")  # what a bootstrap resample draws: users with all their rows, or rows


def target_rank(predictions: Sequence[str], target: str) -> int | None:
    """0-based position of ``target`` in ``predictions``, or None.

    >>> target_rank(["<a_1>", "<a_2>"], "<a_2>"), target_rank(["<a_1>"], "<a_3>")
    (1, None)
    """
    for r, p in enumerate(predictions):
        if p == target:
            return r
    return None


def ranking_metrics(
    predictions: Sequence[Sequence[str]],
    targets: Sequence[str],
    valid: Collection[str],
    ks: Sequence[int] = KS,
    n_boot: int = 2000,
    users: Sequence[str] | None = None,
) -> dict:
    """HR@K, NDCG@K, MRR and invalid rate over all rows, with 95% bootstrap intervals.

    Args:
        predictions: per row, the ranked list of predicted SIDs (best first).
        targets: per row, the target SID.
        valid: every SID of the index.
        ks: cut-offs; a K beyond the list length is not reported.
        n_boot: bootstrap resamples for the intervals (seeded: the same rows give the same intervals).
        users: per row, its user: the intervals resample users with all their rows; None resamples rows.

    Returns:
        ``{"HR@K": ..., "NDCG@K": ..., "MRR": ..., "invalid_rate": ..., "n": ..., "list_length": ...,
        "users": ..., "ci_unit": "user" | "row", "ci95": {"HR@K": [low, high], ...}}``.

    Raises:
        ValueError: no rows, or predictions and targets differ in length.
    """
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"need one prediction list per target, got {len(predictions)} and {len(targets)}")
    n = len(targets)
    length = max(len(p) for p in predictions)
    ranks = [target_rank(p, t) for p, t in zip(predictions, targets)]
    names = [f"{m}@{k}" for k in ks if k <= length for m in ("HR", "NDCG")] + ["MRR"]
    rows = {name: per_row(ranks, name) for name in names}
    out: dict = {"n": n, "list_length": length}
    out.update({name: sum(v) / n for name, v in rows.items()})
    total = sum(len(p) for p in predictions)
    out["invalid_rate"] = sum(x not in valid for p in predictions for x in p) / total if total else 0.0
    out["users"] = len(set(users)) if users is not None else None
    out["ci_unit"] = "user" if users is not None else "row"
    out["ci95"] = bootstrap_cis(rows, n_boot=n_boot, groups=users)
    return out


def bootstrap_means(x, n_boot: int = 2000, seed: int = 0, groups: Sequence | None = None):
    """Means of ``n_boot`` resamples of ``x`` ``(n,)`` or ``(n, m)`` (a row's columns stay together).

    With ``groups`` (per row, e.g. its user) a resample draws groups with replacement, each with all
    of its rows, and its mean is their total over their row count (the cluster bootstrap). Groups are
    numbered in order of first appearance, so with one row per group the draws equal the row
    bootstrap's. Resamples are drawn in blocks, so memory stays bounded for large test sets; the
    draws are the same as one ``rng.integers(0, G, (n_boot, G))`` call.

    Returns:
        ``(n_boot,)`` or ``(n_boot, m)`` array.
    """
    import numpy as np

    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        raise ValueError("bootstrap needs at least one row")
    if groups is None:
        sums, counts = x, np.ones(len(x))
    else:
        if len(groups) != len(x):
            raise ValueError(f"need one group per row, got {len(groups)} for {len(x)} rows")
        first: dict = {}
        ids = np.fromiter((first.setdefault(g, len(first)) for g in groups), dtype=np.int64, count=len(x))
        sums = np.zeros((len(first),) + x.shape[1:])
        np.add.at(sums, ids, x)
        counts = np.bincount(ids).astype(float)
    g = len(sums)
    rng = np.random.default_rng(seed)
    block = max(1, 4_000_000 // g)
    means = []
    for s in range(0, n_boot, block):
        idx = rng.integers(0, g, size=(min(block, n_boot - s), g))
        n = counts[idx].sum(axis=1)
        if x.ndim == 1:
            means.append(sums[idx].sum(axis=1) / n)
        else:
            means.append(np.stack([sums[idx, j].sum(axis=1) / n for j in range(x.shape[1])], 1))
    return np.concatenate(means)


def bootstrap_cis(
    columns: Mapping[str, Sequence[float]], n_boot: int = 2000, seed: int = 0, groups: Sequence | None = None
) -> dict[str, list[float]]:
    """95% percentile bootstrap interval of the mean of each per-row column (a row's columns resampled
    together; with ``groups``, whole groups: see :func:`bootstrap_means`).

    >>> bootstrap_cis({"HR@1": [1.0] * 10})
    {'HR@1': [1.0, 1.0]}
    """
    import numpy as np

    names = list(columns)
    means = bootstrap_means(np.column_stack([columns[c] for c in names]), n_boot, seed, groups)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return {c: [float(low[j]), float(high[j])] for j, c in enumerate(names)}


def beam_miss(
    beam_items: Sequence[Sequence[int]], exact_items: Sequence[Sequence[int]], k: int = 10
) -> dict[str, float]:
    """How far beam search falls short of the exact ranking's top ``k``.

    Returns:
        ``miss_rate``: share of the exact top-k items (over all users) missing from the beam's
        top k; ``users_with_miss``: share of users whose beam top k is not the exact top-k set.

    >>> beam_miss([[1, 2], [3, 4]], [[1, 2], [3, 5]], k=2)
    {'miss_rate': 0.25, 'users_with_miss': 0.5}
    """
    if len(beam_items) != len(exact_items) or not beam_items:
        raise ValueError("need one beam list per exact list")
    missed = [len(set(e[:k]) - set(b[:k])) for b, e in zip(beam_items, exact_items)]
    total = sum(len(e[:k]) for e in exact_items)
    if total == 0:
        raise ValueError("the exact lists are empty")
    return {"miss_rate": sum(missed) / total, "users_with_miss": sum(m > 0 for m in missed) / len(missed)}


def row_ranks(rows: Sequence[dict]) -> list[int | None]:
    """Per-row 0-based rank of the target item in an ``eval_results.json`` list (None = miss).

    Uses item ids (``item_id``, ``predict_items``), so LLM cells and baselines compare row by row.
    """
    return [target_rank([str(i) for i in r["predict_items"]], str(r["item_id"])) for r in rows]


def per_row(ranks: Sequence[int | None], metric: str) -> list[float]:
    """Per-row values of ``HR@K``, ``NDCG@K`` or ``MRR`` (their mean is the metric)."""
    if metric == "MRR":
        return [0.0 if r is None else 1.0 / (r + 1) for r in ranks]
    name, k = metric.split("@")
    k = int(k)
    if name == "HR":
        return [float(r is not None and r < k) for r in ranks]
    if name == "NDCG":
        return [1.0 / math.log2(r + 2) if r is not None and r < k else 0.0 for r in ranks]
    raise ValueError(f"unknown metric {metric!r}")


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0, groups: Sequence | None = None
) -> dict[str, float]:
    """Mean of ``a - b`` over rows with a 95% percentile bootstrap interval (a row's two values are
    resampled together; with ``groups``, whole users: see :func:`bootstrap_means`).

    Returns:
        ``{"diff", "ci_low", "ci_high", "p_value"}`` where ``p_value`` is the two-sided bootstrap
        share of resampled differences on the other side of zero.
    """
    import numpy as np

    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(x) == 0:
        raise ValueError("paired_bootstrap needs at least one row")
    means = bootstrap_means(x, n_boot, seed, groups)
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return {
        "diff": float(x.mean()),
        "ci_low": float(np.percentile(means, 2.5)),
        "ci_high": float(np.percentile(means, 97.5)),
        "p_value": float(min(1.0, p)),
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together (family-wise error control).

    The ``i``-th smallest p-value is multiplied by ``m - i`` (``i`` from 0), then made monotone and
    capped at 1; a comparison is significant at level a when its adjusted p-value is below a.

    >>> holm([0.01, 0.04, 0.03, 0.5])
    [0.04, 0.09, 0.09, 0.5]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = round(running, 12)
    return out


# ----------------------------------------------------------------------------- text generation
_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"  # one CJK character
    r"|[^\W_]+"  # or a run of other letters and digits
)
TEXT_METRICS = ("ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU")


def text_tokens(text: str) -> list[str]:
    """The tokens ROUGE and BLEU count: each CJK character, and each run of other letters and digits,
    lower-cased; punctuation and spaces are dropped.

    >>> text_tokens("The HP-74 ink, 2 pack."), text_tokens("惠普墨盒 HP")
    (['the', 'hp', '74', 'ink', '2', 'pack'], ['惠', '普', '墨', '盒', 'hp'])
    """
    return _TOKEN.findall(text.lower())


class _Tokenizer:
    """rouge-score's tokenizer interface over :func:`text_tokens`."""

    def tokenize(self, text: str) -> list[str]:
        return text_tokens(text)


def text_metrics(
    predictions: Sequence[str], references: Sequence[str], n_boot: int = 2000, seed: int = 0
) -> dict[str, float | int | dict]:
    """ROUGE-1/2/L (mean F-measure over examples) and corpus BLEU-4, on 0-100, with 95% bootstrap intervals.

    BLEU is sacrebleu's corpus BLEU (exponential smoothing, brevity penalty) over :func:`text_tokens`;
    a resample sums its examples' n-gram statistics, so its BLEU is the corpus BLEU of that resample.

    Returns:
        ``{"ROUGE-1", "ROUGE-2", "ROUGE-L", "BLEU", "n", "ci95": {metric: [low, high]}, "per_example":
        {"ROUGE-1": [...], ...}}``.

    Raises:
        ValueError: no examples, or predictions and references of different lengths.
    """
    import numpy as np
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import BLEU

    if len(predictions) != len(references) or not references:
        raise ValueError(f"need as many predictions as references, at least one: {len(predictions)}, {len(references)}")
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Tokenizer())
    rouge = {m: [] for m in TEXT_METRICS[:3]}
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)
        for m, key in zip(rouge, ("rouge1", "rouge2", "rougeL")):
            rouge[m].append(100 * scores[key].fmeasure)
    bleu = BLEU(tokenize="none")
    joined = [" ".join(text_tokens(t)) for t in predictions], [" ".join(text_tokens(t)) for t in references]
    # per example: sys_len, ref_len, then matched and total n-grams for n = 1..4 (sacrebleu 2.6's own
    # statistics, pinned in pyproject.toml; summed, they give its corpus score)
    stats = np.array(bleu._extract_corpus_statistics(joined[0], [joined[1]]), dtype=float)

    def corpus_bleu(s: np.ndarray) -> float:
        return bleu._compute_score_from_stats(s.tolist()).score

    out: dict = {m: float(np.mean(v)) for m, v in rouge.items()}
    out["BLEU"] = corpus_bleu(stats.sum(0))
    out["n"] = len(references)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(references), size=(n_boot, len(references)))
    columns = np.column_stack([rouge[m] for m in rouge])
    draws = np.column_stack([columns[idx].mean(1), [corpus_bleu(stats[i].sum(0)) for i in idx]])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    out["ci95"] = {m: [float(low[j]), float(high[j])] for j, m in enumerate(TEXT_METRICS)}
    out["per_example"] = rouge
    return out
