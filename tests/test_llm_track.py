"""The general LLM track as a task family of the workflow: config, data steps, summary, plots, reruns."""

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY_SYNTHETIC, snakemake, write_config

from genrec.config import ConfigError, LLMCell, llm_cells, llm_variant_json, validate_config
from genrec.llm.data import nested_scales, prepare_llm_data, read_instructions, write_scale
from genrec.metrics import TEXT_METRICS
from genrec.report.llm import LLM_FIGURES, llm_summary, plot_llm
from genrec.settings import LLMDataSettings

TRACK = {
    "llm_data": {"qa": {"source": "catalogue", "dataset": "synthetic", "test_size": 12, "valid_size": 8}},
    "llm_variants": {
        "full": {"mode": "full", "model": "tiny", "learning_rate": 0.003, "batch_size": 8, "epochs": 2},
        "lora": {"mode": "lora", "model": "tiny", "learning_rate": 0.01, "batch_size": 8, "lora_r": 4, "lora_alpha": 8},
        "cpt": {"mode": "full", "model": "tiny", "pretrain": "items", "learning_rate": 0.003, "batch_size": 8},
    },
    "llm_eval": {"max_new_tokens": 4, "batch_size": 8, "bootstrap_samples": 200},
    "llm_experiments": [
        {"data": ["qa"], "methods": ["full", "lora"], "scales": [16, 32]},
        {"data": ["qa"], "methods": ["cpt"], "scales": [16]},
    ],
    "pretrain_variants": {
        "items": {
            "text": "catalogue",
            "dataset": "synthetic",
            "model": "tiny",
            "max_length": 64,
            "batch_size": 8,
            "learning_rate": 0.003,
            "heldout": 4,
        },
    },  # fmt: skip
    "reward_variants": {
        "rm": {"data": "qa", "model": "tiny", "learning_rate": 0.003, "batch_size": 8, "test_pairs": 8},
    },
}
TARGETS = ("results/llm/results_summary.csv", "results/llm/reward/rm/metrics.json")


REC_SFT_FROM_PRETRAIN = "results/synthetic/runs/tinylm-rkmeans/sft-cptsft/final_checkpoint"


def tiny_config(model_dir) -> dict:
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["models"]["tiny"]["path"] = str(model_dir)
    # the recommendation track's SFT from the same continued-pretrained model
    config["sft_variants"]["cptsft"] = {"model": "tiny", "pretrain": "items", "learning_rate": 0.003}
    return {**config, **copy.deepcopy(TRACK)}


# ----------------------------------------------------------------------------- config
def test_cells_are_the_product_of_data_models_methods_and_scales(tiny_model_dir):
    config = tiny_config(tiny_model_dir)
    validate_config(config)
    cells = llm_cells(config)
    assert cells[:4] == [LLMCell("qa", "tiny", "full", "16"), LLMCell("qa", "tiny", "full", "32"),
                         LLMCell("qa", "tiny", "lora", "16"), LLMCell("qa", "tiny", "lora", "32")]  # fmt: skip
    assert len(cells) == 5
    config["models"]["other"] = {"path": str(tiny_model_dir)}
    config["llm_experiments"][0]["models"] = ["tiny", "other"]
    config["llm_experiments"][0]["scales"] = [0.5]
    assert {(c.model, c.scale) for c in llm_cells(config) if c.method == "lora"} == {("tiny", "0.5"), ("other", "0.5")}
    # the model axis replaces the variant's own model in the slice the training rule sees
    assert json.loads(llm_variant_json(config, "lora", "other"))["model"] == {"path": str(tiny_model_dir)}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["llm_experiments"][0].update(methods=["nope"]), r"llm_experiments.0.methods: \['nope'\] not def"),
        (lambda c: c["llm_experiments"][0].update(data=["nope"]), r"llm_experiments.0.data: \['nope'\] not defined"),
        (lambda c: c["llm_experiments"][0].update(scales=[2.5]), "neither a count nor a fraction"),
        (lambda c: c["llm_experiments"][0].update(scales=[0]), "scales"),
        (lambda c: c["llm_variants"]["full"].update(mode="frozen"), "frozen trains only added token rows"),
        (lambda c: c["llm_variants"]["full"].update(pretrain="nope"), r"llm_variants.full.pretrain: \['nope'\]"),
        (lambda c: c["llm_variants"]["full"].update(lerning_rate=1), "unknown key"),
        (lambda c: c["llm_data"]["qa"].update(dataset="nope"), r"llm_data.qa.dataset: \['nope'\] not defined"),
        (lambda c: c["llm_data"]["qa"].update(source="files"), "source files needs train"),
        (lambda c: c["reward_variants"]["rm"].update(pairs="p.jsonl"), "exactly one of data"),
        (lambda c: c["reward_variants"]["rm"].update(data="nope"), r"reward_variants.rm.data: \['nope'\]"),
        (lambda c: c["pretrain_variants"]["items"].update(text="file"), "text file needs path"),
        (lambda c: c["llm_eval"].update(max_new_tokens=0), "llm_eval.max_new_tokens"),
        (lambda c: c["sft_variants"]["full"].update(pretrain="nope"), r"sft_variants.full.pretrain: \['nope'\]"),
    ],
)
def test_track_config_errors_are_named(tiny_model_dir, edit, message):
    config = tiny_config(tiny_model_dir)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_a_config_without_the_track_is_valid(tiny_model_dir):
    config = tiny_config(tiny_model_dir)
    for key in TRACK:
        config.pop(key)
    with pytest.raises(ConfigError, match=r"sft_variants.cptsft.pretrain: \['items'\] not defined in pretrain_var"):
        validate_config(config)
    config["sft_variants"].pop("cptsft")
    validate_config(config)
    assert llm_cells(config) == []


# ----------------------------------------------------------------------------- data steps
def test_splits_are_disjoint_and_scales_nested(tmp_path, synthetic_data_dir):
    s = LLMDataSettings(source="catalogue", dataset="synthetic", test_size=12, valid_size=0.1)
    out = {k: str(tmp_path / f"{k}.jsonl") for k in ("train", "valid", "test")}
    stats = prepare_llm_data(s, str(synthetic_data_dir / "item.json"), out["train"], out["valid"], out["test"],
                             str(tmp_path / "stats.json"))  # fmt: skip
    parts = {k: read_instructions(v) for k, v in out.items()}
    prompts = {k: {json.dumps(c[:-1]) for c in v} for k, v in parts.items()}
    assert not (prompts["train"] & prompts["test"]) and not (prompts["train"] & prompts["valid"])
    assert not (prompts["valid"] & prompts["test"])
    assert len(parts["test"]) == 12 and stats["train"] == len(parts["train"]) and stats["valid"] == len(parts["valid"])
    sizes = [write_scale(out["train"], n, 0, str(tmp_path / f"s{n}.jsonl")) for n in (8, 16, 0.5)]
    small, mid, half = (read_instructions(tmp_path / f"s{n}.jsonl") for n in (8, 16, 0.5))
    assert sizes == [8, 16, round(0.5 * len(parts["train"]))] and small == mid[:8] and mid == half[:16]
    assert small == nested_scales(parts["train"], [8], 0)["8"]
    again = str(tmp_path / "again.jsonl")
    prepare_llm_data(s, str(synthetic_data_dir / "item.json"), again, again + "v", again + "t", again + "s")
    assert read_instructions(again) == parts["train"]  # deterministic


def test_files_source_keeps_its_test_file_and_drops_shared_prompts(tmp_path):
    rows = [{"instruction": f"Q{i}?", "output": f"A{i}"} for i in range(30)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.json").write_text(json.dumps(rows[:5]))
    s = LLMDataSettings(source="files", train=str(tmp_path / "train.jsonl"), test=str(tmp_path / "test.json"),
                        valid_size=5)  # fmt: skip
    out = [str(tmp_path / f"{k}.jsonl") for k in ("tr", "va", "te")]
    stats = prepare_llm_data(s, None, *out, str(tmp_path / "stats.json"))
    assert stats == {**stats, "train": 20, "valid": 5, "test": 5}
    assert [c[0]["content"] for c in read_instructions(out[2])] == [f"Q{i}?" for i in range(5)]


# ----------------------------------------------------------------------------- summary and plots
def _fake_metrics(path: Path, method: str, n: int, quality: float) -> None:
    m = {k: quality for k in TEXT_METRICS} | {"n": 50, "ci95": {k: [quality - 2, quality + 2] for k in TEXT_METRICS}}
    m |= {"samples_per_s": 3.0, "tokens_per_s": 40.0, "peak_memory_gb": 0.9, "decoding": {"max_new_tokens": 48}}
    m["training"] = {"mode": method, "train_time_s": n / 10, "peak_memory_gb": {"full": 2.0, "lora": 1.2}[method],
                     "trainable_params": {"full": 100, "lora": 3}[method], "total_params": 100, "train_examples": n,
                     "steps": n // 8, "samples_per_s": 5.0, "tokens_per_s": 500.0, "valid_loss": 1.0,
                     "device": "cpu", "first_loss": 3.0, "last_loss": 1.0}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m))


def test_summary_and_both_plots_are_written(tmp_path):
    cells = []
    for method in ("full", "lora"):
        for n in (250, 500, 1000):
            path = tmp_path / method / f"{n}.json"
            _fake_metrics(path, method, n, 20 + n / 100 + (method == "full"))
            cells.append({"data": "qa", "model": "m", "method": method, "scale": str(n), "metrics": str(path)})
    table = llm_summary(cells, str(tmp_path / "results_summary.csv"))
    read = pd.read_csv(tmp_path / "results_summary.csv")
    assert len(read) == 6 and list(read["train_examples"][:3]) == [250, 500, 1000]
    for column in ("ROUGE-L_ci_low", "BLEU_ci_high", "train_time_s", "train_peak_memory_gb", "trainable_pct",
                   "infer_tokens_per_s", "infer_samples_per_s", "mode", "last_loss"):  # fmt: skip
        assert column in read
    assert table.loc[table["method"] == "lora", "trainable_pct"].iloc[0] == 3.0
    paths = {name: str(tmp_path / f"{name}.png") for name in LLM_FIGURES}
    plot_llm(str(tmp_path / "results_summary.csv"), paths)
    for p in paths.values():
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(p).stat().st_size > 5000


def test_summary_refuses_metrics_without_training_figures(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"ROUGE-1": 1.0}))
    with pytest.raises(ValueError, match="no training figures"):
        llm_summary([{"data": "d", "model": "m", "method": "x", "scale": "1", "metrics": str(tmp_path / "m.json")}],
                    str(tmp_path / "s.csv"))  # fmt: skip
    assert not (tmp_path / "s.csv").exists()


# ----------------------------------------------------------------------------- the workflow
def _planned(workdir: Path) -> dict[str, int]:
    out = snakemake(workdir, "-n", *TARGETS)
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def track_run(tmp_path_factory, tiny_model_dir):
    workdir = tmp_path_factory.mktemp("llm-wf")
    config = tiny_config(tiny_model_dir)
    config["datasets"]["synthetic"] = {"source": "synthetic", **TINY_SYNTHETIC}
    write_config(workdir, config)
    snakemake(workdir, *TARGETS, "results/llm/plots/method_comparison.png", REC_SFT_FROM_PRETRAIN)
    return workdir, config


def test_rule_all_builds_the_track_when_the_config_has_it(tmp_path, tiny_model_dir):
    config = tiny_config(tiny_model_dir)
    write_config(tmp_path, config)
    out = snakemake(tmp_path, "-n")
    for rule in ("llm_summary", "llm_plots", "reward_model", "pretrain", "summary", "plots"):
        assert re.search(rf"^{rule}\s+\d+$", out, re.M), rule
    for key in TRACK:
        config.pop(key)
    config["sft_variants"].pop("cptsft")
    write_config(tmp_path, config)
    out = snakemake(tmp_path, "-n")
    assert "llm_" not in out and "reward_model" not in out and re.search(r"^summary\s+1$", out, re.M)


@pytest.mark.slow
def test_track_outputs(track_run):
    workdir, _ = track_run
    res = workdir / "results" / "llm"
    table = pd.read_csv(res / "results_summary.csv")
    assert sorted(zip(table["method"], table["train_examples"])) == [
        ("cpt", 16), ("full", 16), ("full", 32), ("lora", 16), ("lora", 32)]  # fmt: skip
    assert set(table["mode"]) == {"full", "lora"} and (table["n_test"] == 12).all()
    for metric in TEXT_METRICS:
        assert ((table[f"{metric}_ci_low"] <= table[metric]) & (table[metric] <= table[f"{metric}_ci_high"])).all()
    assert (table.loc[table["mode"] == "lora", "trainable_pct"] < 100).all()
    for name in LLM_FIGURES:
        assert (res / "plots" / f"{name}.png").stat().st_size > 5000
    cell = res / "qa" / "runs" / "tiny" / "full" / "scale-32"
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["training"]["train_examples"] == 32 and metrics["training"]["trainable_params"] > 0
    assert len(json.loads((cell / "answers.json").read_text())) == 12
    pretrain = json.loads((workdir / "results" / "pretrain" / "items" / "metrics.json").read_text())
    assert pretrain["perplexity_after"] < pretrain["perplexity_before"]
    cpt_info = json.loads((res / "qa" / "runs" / "tiny" / "cpt" / "scale-16" / "final_checkpoint" / "run_info.json")
                          .read_text())  # fmt: skip
    assert "pretrain" in json.dumps(cpt_info["settings"]["model"])  # trained from the continued-pretrained model
    rec = json.loads((workdir / REC_SFT_FROM_PRETRAIN / "run_info.json").read_text())
    assert rec["stage"] == "sft" and "pretrain/items" in json.dumps(rec["settings"]["model"])
    reward = json.loads((res / "reward" / "rm" / "metrics.json").read_text())
    assert 0 <= reward["pairwise_accuracy"] <= 1 and reward["n_test_pairs"] == 8


@pytest.mark.slow
def test_track_partial_reruns_follow_the_edited_stage(track_run):
    workdir, config = track_run
    assert _planned(workdir) == {}
    edits = [
        (lambda c: c["llm_eval"].update(max_new_tokens=3), {"llm_eval": 5, "llm_summary": 1}),
        (lambda c: c["llm_variants"]["lora"].update(learning_rate=0.02),
         {"llm_sft": 2, "llm_eval": 2, "llm_summary": 1}),
        (lambda c: c["llm_experiments"][0].update(scales=[16, 32, 24]),
         {"llm_scale": 1, "llm_sft": 2, "llm_eval": 2, "llm_summary": 1}),
        (lambda c: c["pretrain_variants"]["items"].update(learning_rate=0.001),
         {"pretrain": 1, "llm_sft": 1, "llm_eval": 1, "llm_summary": 1}),
        (lambda c: c["reward_variants"]["rm"].update(learning_rate=0.001), {"reward_model": 1}),
        (lambda c: c["llm_data"]["qa"].update(valid_size=6),
         {"llm_data": 1, "llm_scale": 2, "llm_sft": 5, "llm_eval": 5, "llm_summary": 1, "reward_model": 1}),
    ]  # fmt: skip
    for edit, want in edits:
        edited = copy.deepcopy(config)
        edit(edited)
        write_config(workdir, edited)
        assert _planned(workdir) == want
    write_config(workdir, config)
    assert _planned(workdir) == {}
