"""The cluster path on a real SLURM scheduler: the repository's profile runs part of the tiny matrix.

A single-host cluster (slurmctld, slurmd, munged; two fake A100s; no accounting database) comes up
in a temporary directory (tests/slurm_cluster.py). The run uses slurm/config.yaml as shipped, with
only its size caps set to the node (GENREC_SLURM_MAX_CPUS, GENREC_SLURM_MAX_MEM_MB) and a short
first status check. It checks what was submitted (GPU rules with the A100 request in the GPU
partition, the other rules without a GPU, CPUs equal to threads, the small rules not submitted)
and that the results equal the local run's. Skipped, with the reason, where slurm-wlm is missing
or daemons cannot be started; .ci/run installs it when it can.
"""

import json
import subprocess
import sys

import pytest
import slurm_cluster
from conftest import REPO, snakemake, write_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

GPU_RULES = {"sft", "rl_grpo", "evaluate"}
LOCAL_RULES = {"rl_none", "summary", "plots", "all"}
METRICS = ("HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR", "ci95", "n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster.local_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def _profile_env(cluster, **caps) -> dict[str, str]:
    env = {**cluster.env, **{k: str(v) for k, v in caps.items()}}
    for key in ("ACCOUNT", "CPU_PARTITION", "GPU_PARTITION", "GPU_MODEL"):
        env.pop(f"GENREC_SLURM_{key}", None)  # the profile's own defaults: partitions cpu and gpu, A100s
    env.pop("GENREC_TRAIN_GPUS", None)  # one GPU per training job
    return env


def test_check_names_the_requests_no_node_can_meet(cluster, tmp_path, tiny_model_dir):
    write_config(tmp_path, _tiny_config(tiny_model_dir))
    cmd = [sys.executable, "-m", "genrec.cluster", "check", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    cmd += ["--profile", str(REPO / "slurm")]
    uncapped = subprocess.run(cmd, capture_output=True, text=True, env=_profile_env(cluster))
    assert uncapped.returncode == 1
    assert "rule sft asks for 8 CPUs in partition gpu" in uncapped.stderr
    assert "rule sft asks for 64000 MB of memory in partition gpu" in uncapped.stderr
    assert f"its nodes have at most {cluster.mem_mb} ({cluster.node})" in uncapped.stderr
    capped = _profile_env(cluster, GENREC_SLURM_MAX_CPUS=cluster.cpus, GENREC_SLURM_MAX_MEM_MB=cluster.mem_mb // 2)
    ok = subprocess.run(cmd, capture_output=True, text=True, env=capped)
    assert ok.returncode == 0, ok.stderr


def _tiny_config(tiny_model_dir):
    import yaml

    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["models"]["tiny"]["path"] = str(tiny_model_dir)
    return config


def test_tiny_matrix_under_slurm_equals_the_local_run(cluster, tiny_run, tmp_path):
    local, config = tiny_run
    # a part of the tiny matrix keeps this test short (every cluster job costs seconds of polling): the
    # LoRA SFT variant (an adapter checkpoint crosses jobs), GRPO with the SASRec reward, popularity
    config = json.loads(json.dumps(config))
    config["experiments"][0]["sft_variants"] = ["short"]
    del config["baselines"]["gru4rec"], config["baselines"]["sasrec_minionerec"]
    write_config(tmp_path, config)
    env = _profile_env(cluster, GENREC_SLURM_MAX_CPUS=cluster.cpus, GENREC_SLURM_MAX_MEM_MB=cluster.mem_mb // 2)
    snakemake(
        tmp_path,
        "--profile",
        str(REPO / "slurm"),
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "5",
        env=env,
    )
    submitted = [j for j in slurm_cluster.jobs(cluster) if j.get("WorkDir") == str(tmp_path.resolve())]
    by_rule: dict[str, list[dict]] = {}
    for job in submitted:
        assert job["JobState"] == "COMPLETED", job
        rule = job["Comment"].removeprefix("rule_").split("_wildcards_")[0]
        by_rule.setdefault(rule, []).append(job)
    assert GPU_RULES <= set(by_rule) and not LOCAL_RULES & set(by_rule)
    assert {"prepare_data", "embed_items", "build_sids", "baseline_seqrec_train", "baseline_seqrec"} <= set(by_rule)
    assert "baseline_popularity" in by_rule
    for rule, jobs in by_rule.items():
        for job in jobs:
            gpu = "gres:gpu:a100:1" in job.get("TresPerJob", "")
            assert gpu == (rule in GPU_RULES), f"{rule}: TresPerJob={job.get('TresPerJob')}"
            assert job["Partition"] == ("gpu" if rule in GPU_RULES else "cpu"), rule
    assert int(by_rule["sft"][0]["NumCPUs"]) == min(8, cluster.cpus)  # the rule's threads, capped to the node
    # the same rankings and metrics; scores agree to float noise (5th decimal in a few rows after GRPO)
    compared = sorted((tmp_path / "results").rglob("eval_results.json"))
    assert len(compared) == 4  # two cells, two baselines
    for path in compared:
        where = path.relative_to(tmp_path)
        mine, theirs = json.loads(path.read_text()), json.loads((local / where).read_text())
        assert len(mine) == len(theirs), where
        for a, b in zip(mine, theirs):
            assert a["predict"] == b["predict"] and a["output"] == b["output"], where
            assert a.get("scores", []) == pytest.approx(b.get("scores", []), abs=1e-3), where
        metrics = [json.loads((root / where).with_name("metrics.json").read_text()) for root in (tmp_path, local)]
        assert {k: metrics[0][k] for k in METRICS} == {k: metrics[1][k] for k in METRICS}, where
    assert (tmp_path / "results" / "summary.csv").is_file() and (tmp_path / "results" / "plots").is_dir()
