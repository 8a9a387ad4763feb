# Validation, wildcard constraints and small input helpers; all logic lives in genrec.config.
import re

from genrec.config import (
    cell_files,
    check_config_files,
    check_models,
    dataset_sources,
    experiment_cells,
    llm_cells,
    llm_variant_json,
    model_source,
    named_model_source,
    sid_source,
    stage_json,
    validate_config,
)
from genrec.report.llm import LLM_FIGURES as LLM_PLOTS
from genrec.report.plots import FIGURES as PLOTS
from genrec.settings import (
    SEQREC_KINDS,
    EvalSettings,
    LLMDataSettings,
    PretrainSettings,
    RewardSettings,
    RLSettings,
)

check_config_files(workflow.configfiles)
validate_config(config)
check_models(config)

EVAL = EvalSettings.from_dict(config["eval"])
CELLS = experiment_cells(config)
DATASETS = sorted({c.dataset for c in CELLS})
BASELINES = sorted(config.get("baselines") or {})


LLM_CELLS = llm_cells(config)


def _choices(section):
    return "|".join(map(re.escape, sorted(config.get(section) or {}))) or "(?!)"  # (?!) matches nothing


wildcard_constraints:
    dataset=_choices("datasets"),
    encoder=_choices("encoders"),
    sid=_choices("sid_methods"),
    sft=_choices("sft_variants"),
    rl=_choices("rl_variants"),
    llm_data=_choices("llm_data"),
    llm_method=_choices("llm_variants"),
    llm_model=_choices("models"),
    scale=r"[0-9]+(\.[0-9]+)?",
    pretrain=_choices("pretrain_variants"),
    reward=_choices("reward_variants"),


def settings_of(section, wildcard=None):
    """Params function: the stage's own config slice as sorted JSON."""
    if wildcard is None:
        return lambda wc: stage_json(config, section)
    return lambda wc: stage_json(config, section, getattr(wc, wildcard))


def model_of(section, wildcard):
    """Params function: what identifies the model's weights now (package version, directory state)."""
    return lambda wc: model_source(config, section, getattr(wc, wildcard))


def get_dataset_sources(wc):
    """The raw files a dataset is built from, so that editing one reruns it (none for synthetic)."""
    return dataset_sources(config, wc.dataset)


def get_eval_split(wc):
    """The split every cell and baseline is scored on (eval.split: test, or valid while tuning)."""
    return expand(getattr(rules.prepare_data.output, f"{EVAL.split}_csv"), dataset=wc.dataset)[0]


def eval_protocol(wc):
    """Params of the baselines: the scored split and the bootstrap unit, the eval keys they follow."""
    return {"split": EVAL.split, "bootstrap": EVAL.bootstrap}


def rl_variants_of(method):
    names = [n for n, e in config["rl_variants"].items() if e["method"] == method]
    return "|".join(map(re.escape, sorted(names))) or "(?!)"  # (?!) matches nothing


def get_sid_source(wc):
    """The index an import SID method reads (its path, or the dataset's own source.index.json)."""
    own = expand(rules.prepare_data.output.source_index, dataset=wc.dataset)[0]
    return sid_source(config, wc.sid, own)


def get_grpo_scorer(wc):
    """The collaborative reward's scorer: the trained baseline named by the variant's `scorer`."""
    s = RLSettings.from_json(stage_json(config, "rl_variants", wc.rl))
    if not s.needs_scorer:
        return {}
    return {"scorer": expand(rules.baseline_seqrec_train.output.scorer, dataset=wc.dataset, seqrec=s.scorer)[0]}


def get_grpo_reward_model(wc):
    """The reward_model reward's trained reward model (the variant's `reward_model`, a reward_variants entry)."""
    s = RLSettings.from_json(stage_json(config, "rl_variants", wc.rl))
    if not s.needs_reward_model:
        return {}
    return {"reward_model": expand(rules.reward_model.output.checkpoint, reward=s.reward_model)[0]}


def get_summary_cells():
    """Per cell: its names and the files the summary reads, from the rules' own output patterns."""
    return cell_files(
        CELLS,
        {
            "metrics": rules.evaluate.output.metrics,
            "results": rules.evaluate.output.results,
            "policy": rules.rl_none.output.policy,
            "data_stats": rules.prepare_data.output.stats_json,
            "sid_stats": rules.build_sids.output.stats,
            "train_log": rules.sft.output.train_log,
        },
    )


def get_summary_baselines():
    """Per dataset and baseline: the names and the files the summary reads."""
    outputs = {
        "popularity": rules.baseline_popularity.output,
        **{k: rules.baseline_seqrec.output for k in SEQREC_KINDS},
    }
    return [
        {
            "dataset": d,
            "baseline": b,
            "metrics": expand(outputs[b].metrics, dataset=d, seqrec=b)[0],
            "results": expand(outputs[b].results, dataset=d, seqrec=b)[0],
            "data_stats": expand(rules.prepare_data.output.stats_json, dataset=d)[0],
        }
        for d in DATASETS
        for b in BASELINES
    ]


# ----------------------------------------------------------------------------- the general LLM track
def get_llm_data_sources(wc):
    """What an instruction dataset is built from: its dataset's item.json (catalogue) or its files."""
    s = LLMDataSettings.from_dict(config["llm_data"][wc.llm_data])
    if s.source == "catalogue":
        return {"item_json": expand(rules.prepare_data.output.item_json, dataset=s.dataset)[0]}
    return {"train": s.train, **({"test": s.test} if s.test else {})}


def get_pretrained(section, wildcard):
    """Input function: the continued-pretrained checkpoint a variant starts from (`pretrain:`), if any."""

    def pretrained(wc):
        name = (config[section][getattr(wc, wildcard)] or {}).get("pretrain")
        return {"pretrained": expand(rules.pretrain.output.checkpoint, pretrain=name)[0]} if name else {}

    return pretrained


def get_pretrain_texts(wc):
    """The raw text of a continued-pretraining variant: a dataset's item.json, or its file."""
    s = PretrainSettings.from_json(stage_json(config, "pretrain_variants", wc.pretrain))
    if s.text == "catalogue":
        return {"texts": expand(rules.prepare_data.output.item_json, dataset=s.dataset)[0]}
    return {"texts": s.path}


def get_reward_pairs(wc):
    """A reward model's preference pairs: a file, or the training split of an instruction dataset."""
    s = RewardSettings.from_json(stage_json(config, "reward_variants", wc.reward))
    if s.pairs:
        return {"pairs": s.pairs}
    return {"qa": expand(rules.llm_data.output.train, llm_data=s.data)[0]}


LLM_SUMMARY_CELLS = [
    {
        "data": c.data,
        "model": c.model,
        "method": c.method,
        "scale": c.scale,
        "metrics": "results/llm/{llm_data}/runs/{llm_model}/{llm_method}/scale-{scale}/metrics.json".format(
            **c.wildcards
        ),
    }
    for c in LLM_CELLS
]


def llm_targets():
    """The optional stages' targets of the default target (all): the LLM track, reward models, pretraining."""
    out = []
    if LLM_CELLS:
        out += ["results/llm/results_summary.csv", *expand("results/llm/plots/{name}.png", name=LLM_PLOTS)]
    out += expand("results/llm/reward/{reward}/metrics.json", reward=sorted(config.get("reward_variants") or {}))
    out += expand("results/pretrain/{pretrain}/metrics.json", pretrain=sorted(config.get("pretrain_variants") or {}))
    return out
