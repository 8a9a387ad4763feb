"""The experiment matrix: validation, cells, per-stage config slices and the generated key reference.

``config.yaml`` names variants per stage (``datasets``, ``encoders``, ``sid_methods``,
``sft_variants``, ``rl_variants``), shared ``models``, the ``eval`` settings, ``baselines`` and
a list of ``experiments``, each a product of variant names. :func:`validate_config` checks the
structure with a JSON Schema built here from the settings registries (:func:`structure_schema`),
then builds every entry's typed settings (:mod:`genrec.settings`, the one definition of every key,
default, range and choice), so a bad key or value is reported by its path before any job starts.
:func:`stage_json` gives a rule exactly its own stage's slice as sorted JSON, which Snakemake's
params trigger compares between runs.

    python -m genrec.config docs docs/CONFIG.md   # rewrite the generated key tables of the docs
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from genrec import settings as S

STAGES = ("datasets", "encoders", "sid_methods", "sft_variants", "rl_variants")
STAGE_WILDCARD = dict(zip(STAGES, ("dataset", "encoder", "sid", "sft", "rl")))  # a Cell's field per stage
# sections whose entries are one settings class (datasets dispatch on their source)
ENTRY_SETTINGS: dict[str, type] = {
    "models": S.ModelSpec,
    "encoders": S.EmbedSettings,
    "sid_methods": S.SIDSettings,
    "sft_variants": S.SFTSettings,
    "rl_variants": S.RLSettings,
}
# the optional sections of the stage before SFT and of the general LLM track (genrec.llm)
TRACK_SETTINGS: dict[str, type] = {
    "pretrain_variants": S.PretrainSettings,
    "reward_variants": S.RewardSettings,
    "llm_data": S.LLMDataSettings,
    "llm_variants": S.LLMVariantSettings,
}
NAME = "^[A-Za-z0-9][A-Za-z0-9_.]*$"  # variant names: no "-", run directories join names with it
MODEL_NAME = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ConfigError(ValueError):
    """A config problem, with the path of the offending key in the message."""


@dataclass(frozen=True)
class Cell:
    """One experiment cell: a variant name per stage."""

    dataset: str
    encoder: str
    sid: str
    sft: str
    rl: str

    @property
    def wildcards(self) -> dict[str, str]:
        """The rules' wildcard values of this cell."""
        return dataclasses.asdict(self)

    @property
    def name(self) -> str:
        """``encoder-sid-sft-rl``: the cell within its dataset."""
        return f"{self.encoder}-{self.sid}-{self.sft}-{self.rl}"


def _required(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("required")]


def _entries(required: Sequence[str], pattern: str = NAME, **extra: Any) -> dict:
    return {
        "type": "object",
        "minProperties": 1,
        "propertyNames": {"pattern": pattern},
        "additionalProperties": {"type": "object", "required": list(required), **extra},
    }


def structure_schema() -> dict:
    """The JSON Schema of the config's structure: sections, variant names, required keys, experiments.

    Entry keys, types, ranges and choices are not repeated here: they are the settings dataclasses'
    fields, checked when :func:`validate_config` builds them. What this schema names (sections,
    dataset sources, baselines, required keys) comes from the same registries.
    """
    names = {"type": "array", "minItems": 1, "items": {"type": "string"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["models", *STAGES, "eval", "experiments"],
        "properties": {
            "models": _entries([], MODEL_NAME),
            "datasets": _entries(
                ["source"],
                properties={"source": {"enum": sorted(S.DATASET_SOURCES)}},
                allOf=[
                    {"if": {"properties": {"source": {"const": name}}}, "then": {"required": _required(cls)}}
                    for name, cls in S.DATASET_SOURCES.items()
                ],
            ),
            **{s: _entries(_required(ENTRY_SETTINGS[s])) for s in STAGES if s != "datasets"},
            "eval": {"type": "object"},
            "baselines": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": {name: {"type": ["object", "null"]} for name in S.BASELINES},
            },
            "experiments": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": list(STAGES),
                    "properties": {s: names for s in STAGES},
                },
            },
            # the optional stage before SFT (either track) and the general LLM track
            "pretrain_variants": {"anyOf": [{"type": "null"}, _entries(_required(S.PretrainSettings))]},
            "reward_variants": {"anyOf": [{"type": "null"}, _entries(_required(S.RewardSettings))]},
            "llm_data": {"anyOf": [{"type": "null"}, _entries(_required(S.LLMDataSettings))]},
            "llm_variants": {"anyOf": [{"type": "null"}, _entries(_required(S.LLMVariantSettings))]},
            "llm_eval": {"type": ["object", "null"]},
            "llm_experiments": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["data", "methods", "scales"],
                    "properties": {
                        "data": names,
                        "methods": names,
                        "models": names,
                        "scales": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "number", "exclusiveMinimum": 0},
                        },
                    },
                },
            },
        },
    }


def validate_config(config: dict[str, Any]) -> None:
    """Check the whole config; raise :class:`ConfigError` naming the first bad key or value."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(structure_schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "<top level>"
        raise ConfigError(f"config error at {where}: {e.message}")
    for name, entry in config["models"].items():
        _build(S.ModelSpec, entry, f"models.{name}")
    for name, entry in config["datasets"].items():
        try:
            S.dataset_settings(entry, f"datasets.{name}")
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config error: {err}") from err
    for section in STAGES[1:]:
        for name in config[section]:
            _build(ENTRY_SETTINGS[section], _resolved(config, section, name), f"{section}.{name}")
    for name in config["rl_variants"]:
        rl = S.RLSettings.from_dict(_resolved(config, "rl_variants", name))
        if rl.needs_scorer and rl.scorer not in (config.get("baselines") or {}):
            raise ConfigError(
                f"config error at rl_variants.{name}.rewards: the collaborative reward reads the trained "
                f"{rl.scorer} scorer; add baselines: {{{rl.scorer}: {{}}}}"
            )
    _build(S.EvalSettings, config["eval"], "eval")
    for name, entry in (config.get("baselines") or {}).items():
        _build(S.BASELINES[name], entry or {}, f"baselines.{name}")
    for i, exp in enumerate(config["experiments"]):
        for stage in STAGES:
            unknown = [n for n in exp[stage] if n not in config[stage]]
            if unknown:
                raise ConfigError(
                    f"config error at experiments.{i}.{stage}: {unknown} not defined in {stage} "
                    f"(defined: {sorted(config[stage])})"
                )
    _validate_track(config)


def _names_defined(config: dict[str, Any], names: Sequence[str], section: str, where: str) -> None:
    defined = config.get(section) or {}
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise ConfigError(f"config error at {where}: {unknown} not defined in {section} (defined: {sorted(defined)})")


def _validate_track(config: dict[str, Any]) -> None:
    """The optional sections: continued pretraining, reward models and the general LLM track's matrix."""
    for section, cls in TRACK_SETTINGS.items():
        for name in config.get(section) or {}:
            _build(cls, _resolved(config, section, name), f"{section}.{name}")
    for section in ("sft_variants", "llm_variants", "reward_variants"):
        for name, entry in (config.get(section) or {}).items():
            if (entry or {}).get("pretrain"):
                _names_defined(config, [entry["pretrain"]], "pretrain_variants", f"{section}.{name}.pretrain")
    for name, entry in (config.get("pretrain_variants") or {}).items():
        if entry.get("dataset"):
            _names_defined(config, [entry["dataset"]], "datasets", f"pretrain_variants.{name}.dataset")
    for name, entry in (config.get("llm_data") or {}).items():
        if entry.get("dataset"):
            _names_defined(config, [entry["dataset"]], "datasets", f"llm_data.{name}.dataset")
    for name, entry in (config.get("reward_variants") or {}).items():
        if entry.get("data"):
            _names_defined(config, [entry["data"]], "llm_data", f"reward_variants.{name}.data")
    for name, entry in config["rl_variants"].items():
        if (entry or {}).get("reward_model"):
            _names_defined(config, [entry["reward_model"]], "reward_variants", f"rl_variants.{name}.reward_model")
    _build(S.LLMEvalSettings, config.get("llm_eval") or {}, "llm_eval")
    for i, exp in enumerate(config.get("llm_experiments") or []):
        _names_defined(config, exp["data"], "llm_data", f"llm_experiments.{i}.data")
        _names_defined(config, exp["methods"], "llm_variants", f"llm_experiments.{i}.methods")
        _names_defined(config, exp.get("models", []), "models", f"llm_experiments.{i}.models")
        for scale in exp["scales"]:
            if isinstance(scale, float) and scale > 1 and not scale.is_integer():
                raise ConfigError(
                    f"config error at llm_experiments.{i}.scales: {scale} is neither a count nor a fraction in (0, 1]"
                )


def _build(cls, entry: dict, where: str):
    try:
        return cls.from_dict(dict(entry), where)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config error: {err}") from err


def _resolved(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    """An entry with its model name replaced by the model's entry.

    Raises:
        ConfigError: the entry names a model that ``models`` does not define.
    """
    entry = dict(config[section][name] or {})
    model = entry.get("model")
    if isinstance(model, str):
        if model not in config["models"]:
            raise ConfigError(
                f"config error at {section}.{name}.model: unknown model {model!r}; defined models: "
                f"{sorted(config['models'])}"
            )
        entry["model"] = dict(config["models"][model])
    return entry


def stage_json(config: dict[str, Any], section: str, name: str | None = None) -> str:
    """The sorted JSON of one stage entry (``name``) or section, models resolved inline.

    Only this slice reaches the rule, so editing one stage reruns it and its descendants only.
    """
    entry = _resolved(config, section, name) if name is not None else (config.get(section) or {})
    return json.dumps(entry, sort_keys=True)


def experiment_cells(config: dict[str, Any]) -> list[Cell]:
    """Every cell of the experiments' products, deduplicated, in a stable order."""
    cells: dict[Cell, None] = {}
    for exp in config["experiments"]:
        for combo in itertools.product(*(exp[s] for s in STAGES)):
            cells[Cell(*combo)] = None
    return list(cells)


@dataclass(frozen=True)
class LLMCell:
    """One cell of the general LLM track: an instruction dataset, a base model, a method and a data scale."""

    data: str
    model: str
    method: str
    scale: str  # as given in config: a count ("2000") or a fraction ("0.25") of the training split

    @property
    def wildcards(self) -> dict[str, str]:
        return {"llm_data": self.data, "llm_model": self.model, "llm_method": self.method, "scale": self.scale}


def scale_name(scale: float) -> str:
    """A data scale as it appears in paths and the summary: ``2000`` for a count, ``0.25`` for a fraction.

    >>> scale_name(2000), scale_name(2000.0), scale_name(0.25), scale_name(1.0)
    ('2000', '2000', '0.25', '1.0')
    """
    if isinstance(scale, float) and scale > 1:
        scale = int(scale)
    return str(scale)


def scale_value(name: str) -> int | float:
    """The inverse of :func:`scale_name`: a count (int) or a fraction (float).

    >>> scale_value("2000"), scale_value("0.25"), scale_value("1.0")
    (2000, 0.25, 1.0)
    """
    return float(name) if "." in name else int(name)


def llm_cells(config: dict[str, Any]) -> list[LLMCell]:
    """Every cell of ``llm_experiments`` (data x models x methods x scales), deduplicated, in a stable order.

    An entry without ``models`` trains each method on its own ``model``.
    """
    cells: dict[LLMCell, None] = {}
    for exp in config.get("llm_experiments") or []:
        for data, method in itertools.product(exp["data"], exp["methods"]):
            models = exp.get("models") or [config["llm_variants"][method]["model"]]
            for model, scale in itertools.product(models, exp["scales"]):
                cells[LLMCell(data, model, method, scale_name(scale))] = None
    return list(cells)


def llm_variant_json(config: dict[str, Any], method: str, model: str) -> str:
    """The sorted JSON of an ``llm_variants`` entry trained on ``model`` (a name in ``models``)."""
    entry = {**(config["llm_variants"][method] or {}), "model": model}
    return json.dumps(_resolved({**config, "llm_variants": {method: entry}}, "llm_variants", method), sort_keys=True)


def sid_source(config: dict[str, Any], sid: str, dataset_index: str) -> dict[str, str]:
    """The index an ``import`` SID method reads, as a rule input: the entry's ``path``, else the
    dataset's own ``source.index.json`` (``dataset_index``); no input for the other methods.

    >>> config = {"sid_methods": {"own": {"method": "import"}, "km": {"method": "rkmeans"}}}
    >>> sid_source(config, "own", "d/source.index.json"), sid_source(config, "km", "d/source.index.json")
    ({'source_index': 'd/source.index.json'}, {})
    """
    entry = S.SIDSettings.from_dict(config["sid_methods"][sid])
    return {"source_index": entry.path or dataset_index} if entry.method == "import" else {}


MODEL_SECTIONS = ("encoders", "sft_variants")  # the stages that load a pretrained model


def check_models(config: dict[str, Any]) -> None:
    """Resolve every model a cell uses, offline and without loading weights, so that a misspelt package,
    a missing directory or GGUF file, or an uncached hub id while offline fails before any job starts.

    Raises:
        ConfigError: naming the model entry, the stage entries that use it and what is wrong.
    """
    from genrec.models import resolve_model

    used: dict[str, list[str]] = {}
    for cell in experiment_cells(config):
        for section in MODEL_SECTIONS:
            name = getattr(cell, STAGE_WILDCARD[section])
            model = (config[section][name] or {}).get("model")
            key = model if isinstance(model, str) else json.dumps(model, sort_keys=True)
            users = used.setdefault(key, [])
            if f"{section}.{name}" not in users:
                users.append(f"{section}.{name}")
    for section in ("pretrain_variants", "reward_variants"):
        for name, entry in (config.get(section) or {}).items():
            model = entry["model"]
            used.setdefault(model if isinstance(model, str) else json.dumps(model, sort_keys=True), []).append(
                f"{section}.{name}"
            )
    for cell in llm_cells(config):
        users = used.setdefault(cell.model, [])
        if f"llm_variants.{cell.method}" not in users:
            users.append(f"llm_variants.{cell.method}")
    for key, users in used.items():
        spec = config["models"][key] if key in config["models"] else json.loads(key)
        try:
            resolve_model(spec)
        except (FileNotFoundError, OSError, ValueError) as err:
            where = f"models.{key}" if key in config["models"] else f"{users[0]}.model"
            raise ConfigError(f"config error at {where} (used by {', '.join(users)}): {err}") from err


def model_source(config: dict[str, Any], section: str, name: str) -> str:
    """What identifies the weights a stage entry's model loads now (:func:`genrec.models.model_source`):
    a rule's params carry it, so a new package version or an edited model directory reruns the stage."""
    return _cached_source(json.dumps(_resolved(config, section, name)["model"], sort_keys=True))


def named_model_source(config: dict[str, Any], model: str) -> str:
    """:func:`model_source` of the ``models`` entry named ``model`` (the LLM track's model axis)."""
    return _cached_source(json.dumps(config["models"][model], sort_keys=True))


@functools.cache
def _cached_source(spec: str) -> str:
    """One look per model entry and Snakefile parse (params functions run once per job)."""
    from genrec.models import model_source as source

    return source(json.loads(spec))


def dataset_sources(config: dict[str, Any], dataset: str) -> list[str]:
    """The files a dataset entry is built from, as the ``prepare_data`` rule's inputs (none for synthetic)."""
    from genrec.data.prepare import dataset_sources as sources

    return sources(S.dataset_settings(config["datasets"][dataset], f"datasets.{dataset}"))


def cell_files(cells: Sequence[Cell], templates: Mapping[str, str]) -> list[dict[str, str]]:
    """Per cell its variant names and, for each key of ``templates``, that rule output filled with the cell.

    >>> cell_files([Cell("d", "e", "s", "f", "r")], {"metrics": "results/{dataset}/{sft}-{rl}/metrics.json"})
    [{'dataset': 'd', 'encoder': 'e', 'sid': 's', 'sft': 'f', 'rl': 'r', 'metrics': 'results/d/f-r/metrics.json'}]
    """
    return [{**c.wildcards, **{k: t.format(**c.wildcards) for k, t in templates.items()}} for c in cells]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a mapping key given twice (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"config error in {key_node.start_mark.name}: key {key!r} is given twice "
                    f"(lines {seen[key]} and {line}); YAML would silently keep only the last value"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, refusing duplicate keys (naming the key and both lines)."""
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_UniqueKeyLoader) or {}


def check_config_files(paths: Sequence[str | Path]) -> None:
    """Re-read the config files Snakemake loaded, for what its own YAML reading lets pass (duplicate keys)."""
    for path in paths:
        if Path(path).is_file():
            read_config_file(path)


def load_config(path: str) -> dict[str, Any]:
    """Read and validate a config file (for use outside Snakemake)."""
    config = read_config_file(path)
    validate_config(config)
    return config


# ----------------------------------------------------------------------------- the key reference
DOC_SECTIONS: tuple[tuple[str, type], ...] = (
    ("models.<name>", S.ModelSpec),
    ("datasets.<name> (source: synthetic)", S.SyntheticSettings),
    ("datasets.<name> (source: amazon2018)", S.AmazonSettings),
    ("datasets.<name> (source: minionerec)", S.ImportSettings),
    ("encoders.<name>", S.EmbedSettings),
    ("sid_methods.<name>", S.SIDSettings),
    ("sft_variants.<name>", S.SFTSettings),
    ("rl_variants.<name>", S.RLSettings),
    ("eval", S.EvalSettings),
    ("pretrain_variants.<name>", S.PretrainSettings),
    ("llm_data.<name>", S.LLMDataSettings),
    ("llm_variants.<name>", S.LLMVariantSettings),
    ("llm_eval", S.LLMEvalSettings),
    ("reward_variants.<name>", S.RewardSettings),
    ("baselines.popularity", S.PopularitySettings),
    ("baselines.sasrec, baselines.gru4rec", S.SeqRecSettings),
)
BEGIN = "<!-- BEGIN settings reference: generated by `python -m genrec.config docs docs/CONFIG.md` -->"
END = "<!-- END settings reference -->"


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata["required"]:
        return "required"
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def _allowed_text(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta["model_name"]:
        return "a name in `models`"
    parts = []
    if meta["choices"]:
        parts.append(", ".join(f"`{c}`" for c in meta["choices"]))
    if meta["keys"]:
        parts.append("keys " + ", ".join(f"`{k}`" for k in meta["keys"]))
    bounds = S.bounds_text(meta)
    if bounds:
        prefix = "values " if meta["keys"] else "a list of integers " if str(f.type).startswith("tuple") else ""
        parts.append(prefix + bounds)
    if str(f.type) == "str | list[str]":
        parts.append("or a list of names")
    return "; ".join(parts) or _TYPE_WORDS[str(f.type)]


_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "text", "bool": "`true` or `false`"}


def settings_reference() -> str:
    """The Markdown key tables of every section: key, default, allowed values, meaning."""
    out = [BEGIN]
    for title, cls in DOC_SECTIONS:
        out += ["", f"### `{title}`", "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
        own = cls.__annotations__  # the class's own keys first, then those it shares with others
        for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
            help_text = f.metadata["help"].replace("|", "\\|")
            out.append(f"| `{f.name}` | {_default_text(f)} | {_allowed_text(f)} | {help_text} |")
    out += ["", END]
    return "\n".join(out)


def write_reference(doc: str | Path) -> bool:
    """Replace the generated block of ``doc`` with :func:`settings_reference`; return whether it changed.

    Raises:
        ValueError: ``doc`` has no generated block (its BEGIN and END markers).
    """
    path = Path(doc)
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN.split(":")[0]) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no generated settings block ({BEGIN!r} ... {END!r})")
    new = pattern.sub(lambda _: settings_reference(), text)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m genrec.config``."""
    p = argparse.ArgumentParser(description="config tools")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("docs", help="rewrite the generated key tables of a Markdown file").add_argument("file")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m genrec.config docs FILE`` rewrites FILE's generated key tables."""
    args = parser().parse_args(argv)
    if args.command == "docs":
        write_reference(args.file)


if __name__ == "__main__":
    main()
