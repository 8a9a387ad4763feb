import os
import sys
from pathlib import Path

import pytest

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
