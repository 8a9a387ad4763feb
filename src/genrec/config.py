"""The experiment matrix: validation, cells and per-stage config slices.

``config.yaml`` names variants per stage (``datasets``, ``encoders``, ``sid_methods``,
``sft_variants``, ``rl_variants``), shared ``models``, the ``eval`` settings, ``baselines`` and
a list of ``experiments``, each a product of variant names. :func:`validate_config` checks it
against ``config.schema.yaml`` and then builds every stage's typed settings, so a bad key or
value is reported by name before any job starts. :func:`stage_json` gives a rule exactly its
own stage's slice as sorted JSON, which Snakemake's params trigger compares between runs.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from genrec import settings as S

STAGES = ("datasets", "encoders", "sid_methods", "sft_variants", "rl_variants")
_SETTINGS = {
    "encoders": S.EmbedSettings,
    "sid_methods": S.SIDSettings,
    "sft_variants": S.SFTSettings,
    "rl_variants": S.RLSettings,
}


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
    def run_dir(self) -> str:
        return f"results/{self.dataset}/runs/{self.encoder}-{self.sid}/sft-{self.sft}/rl-{self.rl}"


def _schema() -> dict:
    return yaml.safe_load(resources.files("genrec").joinpath("config.schema.yaml").read_text())


def validate_config(config: dict[str, Any]) -> None:
    """Check the whole config; raise :class:`ConfigError` naming the first bad key or value."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "<top level>"
        raise ConfigError(f"config error at {where}: {e.message}")
    models = config["models"]
    for name, spec in models.items():
        _build(S.ModelSpec, spec, f"models.{name}")
    for name, entry in config["datasets"].items():
        try:
            S.dataset_settings(entry, f"datasets.{name}")
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config error: {err}") from err
    for section, cls in _SETTINGS.items():
        for name, entry in config[section].items():
            if "model" in entry and entry["model"] not in models:
                raise ConfigError(
                    f"config error at {section}.{name}.model: unknown model {entry['model']!r}; "
                    f"defined models: {sorted(models)}"
                )
            _build(cls, _resolved(config, section, name), f"{section}.{name}")
    for name in config["rl_variants"]:
        rl = _build(S.RLSettings, _resolved(config, "rl_variants", name), f"rl_variants.{name}")
        if rl.needs_scorer and rl.scorer not in (config.get("baselines") or {}):
            raise ConfigError(
                f"config error at rl_variants.{name}.rewards: the collaborative reward reads the trained "
                f"{rl.scorer} scorer; add baselines: {{{rl.scorer}: {{}}}}"
            )
    _build(S.EvalSettings, config["eval"], "eval")
    for name, entry in (config.get("baselines") or {}).items():
        _build(S.BASELINE_SETTINGS[name], entry or {}, f"baselines.{name}")
    for i, exp in enumerate(config["experiments"]):
        for stage in STAGES:
            unknown = [n for n in exp[stage] if n not in config[stage]]
            if unknown:
                raise ConfigError(
                    f"config error at experiments.{i}.{stage}: {unknown} not defined in {stage} "
                    f"(defined: {sorted(config[stage])})"
                )


def _build(cls, entry: dict, where: str):
    try:
        return cls.from_dict(dict(entry), where)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config error: {err}") from err


def _resolved(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    entry = dict(config[section][name] or {})
    if "model" in entry and isinstance(entry["model"], str):
        entry["model"] = dict(config["models"][entry["model"]])
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


def load_config(path: str) -> dict[str, Any]:
    """Read and validate a config file (for use outside Snakemake)."""
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    validate_config(config)
    return config
