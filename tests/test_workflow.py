"""The Snakemake workflow end to end on a tiny matrix, and partial reruns after config edits."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake, write_config


def planned_jobs(workdir: Path) -> set[str]:
    out = snakemake(workdir, "-n", "results/summary.csv")
    if "Nothing to be done" in out:
        return set()
    table = out.split("Job stats:")[1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total"}


@pytest.mark.slow
def test_tiny_matrix_outputs(tiny_run):
    workdir, config = tiny_run
    res = workdir / "results"
    data = res / "synthetic" / "data"
    assert set(pd.read_csv(data / "test.csv").columns) >= {"user_id", "history_item_id", "item_id"}
    items = json.loads((data / "item.json").read_text())
    import numpy as np

    emb = np.load(res / "synthetic" / "emb" / "synthetic.emb-tinylm-td.npy")
    assert emb.shape[0] == len(items) and emb.dtype == np.float32 and np.isfinite(emb).all()
    sid_dir = res / "synthetic" / "sid" / "tinylm" / "rkmeans"
    index = json.loads((sid_dir / "synthetic.index.json").read_text())
    assert len(index) == len(items) and len({"".join(v) for v in index.values()}) == len(items)
    assert {len(v) for v in index.values()} == {3}
    summary = pd.read_csv(res / "summary.csv")
    assert len(summary) == 8  # 2 SFT x 2 RL cells + popularity, SASRec, GRU4Rec, MiniOneRec's SASRec
    assert sorted(summary["sft"].fillna("")) == ["", "", "", "", "full", "full", "short", "short"]
    assert sorted(summary["baseline"].dropna()) == ["gru4rec", "popularity", "sasrec", "sasrec_minionerec"]
    assert (summary["split"] == "test").all() and (summary["ci_unit"] == "user").all()
    assert (summary["users"] < summary["n"]).all() and (summary["train_rows"] > 0).all()
    from genrec.report.summary import METRIC_COLUMNS

    ci = ["HR@10_ci_low", "HR@10_ci_high", "NDCG@10_ci_low", "NDCG@10_ci_high"]
    assert summary[METRIC_COLUMNS + ci].notna().all().all()  # no empty metric, cells and baselines alike
    assert (summary.loc[summary["rl"] == "none", "rl_train_time_s"] == 0).all()  # rl: none trains nothing
    assert (summary.loc[summary["kind"] == "llm", ["sft_resumes", "rl_resumes"]] == 0).all().all()
    grpo = summary[summary["rl"] == "grpo"]
    assert len(grpo) == 2 and (grpo["rl_train_time_s"] > 0).all() and (grpo["rl_peak_memory_gb"] > 0).all()
    assert (summary.loc[summary["kind"] == "baseline", "baseline"] != "popularity").sum() == 3
    learned = summary["baseline"].isin(["sasrec", "gru4rec", "sasrec_minionerec"])
    assert summary.loc[learned, "baseline_train_time_s"].gt(0).all()
    assert (summary.loc[learned, "baseline_epochs"] >= summary.loc[learned, "baseline_best_epoch"]).all()
    flags = summary.set_index(summary["baseline"].fillna(summary["rl"]))["below_popularity"]
    assert flags.drop("popularity").isin([True, False]).all() and pd.isna(flags["popularity"])
    assert (summary["train_fraction"] == 1.0).all()
    assert (summary["HR@10_ci_low"] <= summary["HR@10"]).all() and (summary["HR@10"] <= summary["HR@10_ci_high"]).all()
    comparisons = pd.read_csv(res / "comparisons.csv")
    # 4 cells against the best baseline, the 2 GRPO cells against their SFT parent; HR@10 and NDCG@10 each
    assert len(comparisons) == (4 + 2) * 2 and comparisons["p_value"].between(0, 1).all()
    assert (comparisons["family_size"] == 12).all() and (comparisons["cells_compared"] == 4).all()
    assert (comparisons["p_holm"] >= comparisons["p_value"]).all()
    assert (comparisons["reference_kind"] == "sft_parent").sum() == 4
    best = comparisons[comparisons["reference_kind"] == "best_baseline"]
    assert (best["reference_is_popularity"] == (best["reference"] == "popularity")).all()
    llm = summary[summary["kind"] == "llm"]
    assert (llm["invalid_rate"] == 0).all() and llm[["HR@1", "HR@5", "NDCG@5", "MRR"]].notna().all().all()
    assert (llm["sid_collision_rate_after"] == 0).all() and (llm["sid_length"] == 3).all()
    assert llm[["sid_level_a_entropy_bits", "sid_reconstruction_error", "sid_coherence_same_code"]].notna().all().all()
    for sft in ("full", "short"):
        run = res / "synthetic" / "runs" / "tinylm-rkmeans" / f"sft-{sft}"
        saved = "config.json" if sft == "full" else "adapter_config.json"  # short is a LoRA variant
        assert (run / "final_checkpoint" / saved).is_file() and (run / "train_loss.png").stat().st_size > 0
        rows = json.loads((run / "rl-none" / "eval_results.json").read_text())
        test = pd.read_csv(data / "test.csv")
        assert len(rows) == len(test)
        valid = {"".join(v) for v in index.values()}
        assert all(len(r["predict"]) == config["eval"]["num_beams"] and set(r["predict"]) <= valid for r in rows)
        assert all(r["output"] == "".join(index[str(r["item_id"])]) for r in rows)
        metrics = json.loads((run / "rl-none" / "metrics.json").read_text())
        hits = sum(r["output"] in r["predict"][:5] for r in rows) / len(rows)
        assert metrics["HR@5"] == pytest.approx(hits)
        low, high = metrics["ci95"]["HR@5"]
        assert low <= metrics["HR@5"] <= high and set(metrics["ci95"]) >= {"HR@1", "NDCG@5", "MRR"}
        assert metrics["batch_size_used"] >= 1 and metrics["users_per_s"] > 0 and metrics["peak_memory_gb"] > 0
        assert metrics["settings"]["mode"] == "beam" and metrics["dtype"] == "float32"
        row = summary[(summary["sft"] == sft) & (summary["rl"] == "none")].iloc[0]
        assert row["HR@5"] == pytest.approx(metrics["HR@5"])
        # GRPO from a full and from a LoRA SFT checkpoint: a full model, its log and plot, evaluated
        rl = run / "rl-grpo"
        assert (rl / "final_checkpoint" / "config.json").is_file() and (rl / "rl_log.png").stat().st_size > 0
        log = json.loads((rl / "rl_log.json").read_text())
        assert log["optimizer_steps"] == 4 and len(log["steps"]) == 4  # 8 prompts, 2 per step
        assert all(s["reward_collaborative_mean"] is not None and s["rollout_s"] > 0 for s in log["steps"])
        rl_metrics = json.loads((rl / "metrics.json").read_text())
        assert rl_metrics["checkpoint"] == str((rl / "final_checkpoint").resolve()) and rl_metrics["invalid_rate"] == 0
        assert "it/s" in (res / "logs" / "rl" / "synthetic" / f"tinylm-rkmeans-{sft}-grpo.log").read_text()
    recs = subprocess.run(
        [
            sys.executable,
            "-m",
            "genrec.recommend",
            str(res / "synthetic/runs/tinylm-rkmeans/sft-short/final_checkpoint"),
            str(sid_dir / "synthetic.index.json"),
            "--items",
            str(data / "item.json"),
            "--history",
            "3",
            "1",
            "-k",
            "3",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    recs = [json.loads(line) for line in recs]
    assert [r["rank"] for r in recs] == [1, 2, 3] and all(r["sid"] == "".join(index[str(r["item_id"])]) for r in recs)
    assert all(r["title"] == items[str(r["item_id"])]["title"] for r in recs)
    pop = json.loads((res / "synthetic" / "baselines" / "popularity" / "metrics.json").read_text())
    assert pop["invalid_rate"] == 0 and 0 <= pop["HR@20"] <= 1
    from genrec.baselines.seqrec import encode_histories, load_scorer

    for kind in ("sasrec", "gru4rec"):
        base = res / "synthetic" / "baselines" / kind
        m = json.loads((base / "metrics.json").read_text())
        assert m["invalid_rate"] == 0 and m["train"]["epochs"] <= 5 and "HR@10" in m["ci95"]
        rows = json.loads((base / "eval_results.json").read_text())
        scorer = load_scorer(base / "scorer")
        first = scorer(encode_histories([json.loads(rows[0]["input"])], len(items), 10))
        assert first.shape == (1, len(items)) and first[0].topk(20).indices.tolist() == rows[0]["predict_items"]
        train_log = (res / "logs" / "baselines" / f"synthetic-{kind}-train.log").read_text()
        assert train_log.count("best validation NDCG@20") == 1  # trained once, scored by baseline_seqrec
    assert (res / "logs" / "sft" / "synthetic" / "tinylm-rkmeans-full.log").read_text().count("settings") >= 1


@pytest.mark.slow
def test_plots_and_report(tiny_run):
    workdir, _ = tiny_run
    from genrec.report.plots import FIGURES

    for name in FIGURES:
        png = workdir / "results" / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    snakemake(workdir, "--report", "results/report.html")
    html = (workdir / "results" / "report.html").read_text()
    for text in ("methods.png", "metric_vs_k.png", "summary.csv", "comparisons.csv", "95% bootstrap intervals"):
        assert text in html


@pytest.mark.slow
def test_partial_reruns_follow_the_edited_stage(tiny_run):
    workdir, config = tiny_run
    assert planned_jobs(workdir) == set()
    edited = json.loads(json.dumps(config))
    edited["eval"]["num_beams"] = 4
    write_config(workdir, edited)
    assert planned_jobs(workdir) == {"evaluate", "summary"}
    edited = json.loads(json.dumps(config))
    edited["sft_variants"]["short"]["learning_rate"] = 0.001
    write_config(workdir, edited)
    assert planned_jobs(workdir) == {"sft", "rl_none", "rl_grpo", "evaluate", "summary"}
    edited = json.loads(json.dumps(config))
    edited["rl_variants"]["grpo"]["beta"] = 0.0
    write_config(workdir, edited)
    assert planned_jobs(workdir) == {"rl_grpo", "evaluate", "summary"}
    edited = json.loads(json.dumps(config))
    edited["eval"]["split"] = "valid"  # tuning: every cell and baseline is scored again, on validation
    write_config(workdir, edited)
    assert planned_jobs(workdir) == {"evaluate", "baseline_popularity", "baseline_seqrec", "summary"}
    write_config(workdir, config)
    assert planned_jobs(workdir) == set()


@pytest.mark.slow
def test_an_edited_model_directory_reruns_what_uses_it(tiny_run, tiny_model_dir):
    workdir, _ = tiny_run
    weights = tiny_model_dir / "config.json"
    before = weights.stat()
    try:
        os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        jobs = planned_jobs(workdir)
    finally:
        os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    # the tiny model is both the SID encoder and the SFT base model: everything after the data reruns
    assert {"embed_items", "sft", "evaluate", "summary"} <= jobs and "prepare_data" not in jobs
    assert planned_jobs(workdir) == set()


@pytest.mark.slow
def test_an_edited_source_file_reruns_its_dataset(tmp_path, synthetic_data_dir, tiny_model_dir):
    source = tmp_path / "source"
    shutil.copytree(synthetic_data_dir, source)
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["models"]["tiny"]["path"] = str(tiny_model_dir)
    config["datasets"] = {"synthetic": {"source": "minionerec", "path": str(source)}}
    workdir = tmp_path / "wf"
    workdir.mkdir()
    write_config(workdir, config)
    target = "results/synthetic/data/data_stats.json"
    snakemake(workdir, target)
    assert "Nothing to be done" in snakemake(workdir, "-n", target)
    lines = (source / "test.csv").read_text().splitlines(keepends=True)
    (source / "test.csv").write_text("".join(lines[:-1]))  # one test row fewer
    assert "prepare_data" in snakemake(workdir, "-n", target)


@pytest.mark.slow
def test_unknown_config_key_is_named(tmp_path, tiny_model_dir):
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["eval"]["beams"] = 3
    write_config(tmp_path, config)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "-n", "--cores", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0 and "beams" in proc.stdout + proc.stderr
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)


def test_snakemake_lint_is_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(REPO), "--lint"],
        capture_output=True,
        text=True,
    )
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout
