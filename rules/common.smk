# Validation, wildcard constraints and small input helpers; all logic lives in genrec.config.
import re

from genrec.config import experiment_cells, stage_json, validate_config
from genrec.plots import FIGURES as PLOTS

validate_config(config)

CELLS = experiment_cells(config)
DATASETS = sorted({c.dataset for c in CELLS})
BASELINES = sorted(config.get("baselines") or {})


def _choices(section):
    return "|".join(map(re.escape, sorted(config[section])))


wildcard_constraints:
    dataset=_choices("datasets"),
    encoder=_choices("encoders"),
    sid=_choices("sid_methods"),
    sft=_choices("sft_variants"),
    rl=_choices("rl_variants"),


def settings_of(section, wildcard=None):
    """Params function: the stage's own config slice as sorted JSON."""
    if wildcard is None:
        return lambda wc: stage_json(config, section)
    return lambda wc: stage_json(config, section, getattr(wc, wildcard))


def rl_variants_of(method):
    names = [n for n, e in config["rl_variants"].items() if e.get("method", "none") == method]
    return "|".join(map(re.escape, sorted(names))) or "(?!)"  # (?!) matches nothing


def grpo_scorer(wc):
    """The collaborative reward's scorer: the trained baseline named by the variant's `scorer`."""
    from genrec.settings import RLSettings

    s = RLSettings.from_json(stage_json(config, "rl_variants", wc.rl))
    if not s.needs_scorer:
        return {}
    return {"scorer": f"results/{wc.dataset}/baselines/{s.scorer}/scorer"}


def get_summary_cells():
    return [
        {
            "dataset": c.dataset,
            "encoder": c.encoder,
            "sid": c.sid,
            "sft": c.sft,
            "rl": c.rl,
            "metrics": f"{c.run_dir}/metrics.json",
            "results": f"{c.run_dir}/eval_results.json",
            "policy": f"{c.run_dir}/policy.json",
            "data_stats": f"results/{c.dataset}/data/data_stats.json",
            "sid_stats": f"results/{c.dataset}/sid/{c.encoder}/{c.sid}/sid_stats.json",
            "train_log": f"results/{c.dataset}/runs/{c.encoder}-{c.sid}/sft-{c.sft}/train_log.json",
        }
        for c in CELLS
    ]


def get_summary_baselines():
    return [
        {
            "dataset": d,
            "baseline": b,
            "metrics": f"results/{d}/baselines/{b}/metrics.json",
            "results": f"results/{d}/baselines/{b}/eval_results.json",
            "data_stats": f"results/{d}/data/data_stats.json",
        }
        for d in DATASETS
        for b in BASELINES
    ]
