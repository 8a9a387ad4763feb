import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
OFFICE = REPO.parent / "shared" / "data" / "office_products"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer, saved once per test session."""
    from tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def office_dir() -> Path:
    if not (OFFICE / "test.csv").is_file():
        pytest.skip(f"real Office_Products data not found at {OFFICE} (it lives in ../shared beside the repo)")
    return OFFICE


TINY_SYNTHETIC = dict(n_users=80, n_items=40, n_categories=4, min_reviews=5, max_reviews=9, seed=0)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset in MiniOneRec's format."""
    from genrec.data.format import dataset_files
    from genrec.data.prepare import prepare_data
    from genrec.settings import SyntheticSettings

    out = tmp_path_factory.mktemp("synthetic") / "data"
    prepare_data(SyntheticSettings(**TINY_SYNTHETIC), **dataset_files(out))
    return out


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> str:
    """Run the workflow in ``workdir`` (2 cores); fail with its output and every job log."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in (workdir / "results" / "logs").rglob("*.log"))
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}{logs}")
    return proc.stdout + proc.stderr


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir):
    """The tiny matrix (tests/configs/tiny.yaml) run locally once per session: (workdir, config)."""
    workdir = tmp_path_factory.mktemp("wf")
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["models"]["tiny"]["path"] = str(tiny_model_dir)
    write_config(workdir, config)
    snakemake(workdir)  # rule all: the summary, comparisons and plots
    return workdir, config
