import copy
import json
from pathlib import Path

import pytest
import yaml

from genrec.config import experiment_cells, stage_json, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = [
    REPO / "config.yaml",
    *sorted((REPO / "config").glob("*.yaml")),
    *sorted((REPO / "tests" / "configs").glob("*.yaml")),
]


def _default():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _merged(base: dict, overlay: dict) -> dict:
    """``--configfile`` semantics: mappings merge recursively, anything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = yaml.safe_load(path.read_text())
    if "models" not in config:  # an overlay for --configfile over config.yaml (config/rl_rewards.yaml)
        config = _merged(_default(), config)
    validate_config(config)


def test_stage_json_is_the_slice_with_models_resolved():
    config = _default()
    sft = json.loads(stage_json(config, "sft_variants", "full"))
    assert sft["model"] == config["models"]["smollm2-135m"]
    assert json.loads(stage_json(config, "eval")) == config["eval"]
    changed = copy.deepcopy(config)
    changed["eval"]["num_beams"] = 30
    assert stage_json(changed, "sft_variants", "full") == stage_json(config, "sft_variants", "full")


def test_cells_are_the_product():
    config = _default()
    config["sft_variants"]["other"] = dict(config["sft_variants"]["full"])
    config["experiments"] = [
        {**config["experiments"][0], "sft_variants": ["full", "other"]},
        {**config["experiments"][0]},
    ]
    cells = experiment_cells(config)
    assert [(c.sft, c.rl) for c in cells] == [("full", "none"), ("full", "grpo"), ("other", "none"), ("other", "grpo")]


def test_structure_schema_comes_from_the_settings():
    """The schema holds structure only; what it names is read from the settings' registries."""
    import dataclasses

    from genrec import settings as S
    from genrec.config import ENTRY_SETTINGS, structure_schema

    schema = structure_schema()["properties"]
    assert sorted(schema["baselines"]["properties"]) == sorted(S.BASELINES)
    assert schema["datasets"]["additionalProperties"]["properties"]["source"]["enum"] == sorted(S.DATASET_SOURCES)
    for section, cls in ENTRY_SETTINGS.items():
        entry = schema[section]["additionalProperties"]
        assert entry["required"] == [f.name for f in dataclasses.fields(cls) if f.metadata["required"]]
        assert "properties" not in entry  # keys, types and ranges are the dataclasses' alone


def _bad_values(f):
    """Values the field's metadata forbids: outside a bound, not a choice, an unknown key, not finite."""
    meta, bad = f.metadata, []
    for bound, step in (("ge", -1), ("gt", 0), ("le", 1), ("lt", 0)):
        if meta[bound] is not None and not meta["keys"]:
            value = meta[bound] + step
            bad.append(int(value) if str(f.type) == "int" and float(value).is_integer() else value)
    if meta["choices"]:
        bad.append("no-such-choice")
    if meta["keys"]:
        bad.append({"no-such-key": 1.0})
    if str(f.type) == "float":
        bad.append(float("inf"))
    return bad


def test_every_range_and_choice_is_enforced_by_its_dataclass():
    import dataclasses

    from genrec.config import DOC_SECTIONS

    checked = 0
    for _, cls in DOC_SECTIONS:
        for f in dataclasses.fields(cls):
            for value in _bad_values(f):
                with pytest.raises(ValueError, match=f.name):
                    cls(**{f.name: value})
                checked += 1
    assert checked > 80
