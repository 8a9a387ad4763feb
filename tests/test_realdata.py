"""Import, SID and evaluation code on MiniOneRec's real Office_Products files (../shared)."""

import json

import numpy as np
import pytest
from tiny import dataset_inputs, train_sft

from genrec.data.format import dataset_files, read_split
from genrec.data.prepare import prepare_data
from genrec.settings import EmbedSettings, EvalSettings, ImportSettings, SIDSettings
from genrec.sids.build import build_sids
from genrec.sids.embed import encode_texts, item_text
from genrec.sids.format import load_index

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def office_cell(tmp_path_factory, office_dir, tiny_model_dir):
    root = tmp_path_factory.mktemp("office")
    data = root / "data"
    prepare_data(ImportSettings(path=str(office_dir)), **dataset_files(data))
    items = json.loads((data / "item.json").read_text())
    texts = [item_text(items[str(i)]) for i in range(len(items))]
    emb = encode_texts(
        texts, EmbedSettings(kind="causal_lm", model={"path": str(tiny_model_dir)}, batch_size=128, max_length=64)
    )
    np.save(root / "emb.npy", emb)
    sid = root / "sid"
    build_sids(
        SIDSettings(codebook_size=32, n_init=1, kmeans_iters=30),
        root / "emb.npy",
        **dataset_inputs(data),
        index_json=sid / "office.index.json",
        stats_json=sid / "sid_stats.json",
        dataset_dir=sid / "dataset",
    )
    return root, data, sid


def test_office_import_and_sids(office_cell):
    root, data, sid = office_cell
    stats = json.loads((data / "data_stats.json").read_text())
    assert stats["items"] == 3459 and stats["valid_rows"] == 4866 and stats["test_rows"] == 4866
    assert stats["train_derived"] is True and stats["train_rows"] > 5000
    index = load_index(sid / "office.index.json", n_items=3459)
    assert len({"".join(v) for v in index.values()}) == 3459
    sid_stats = json.loads((sid / "sid_stats.json").read_text())
    assert sid_stats["collision_rate_after"] == 0.0
    test = read_split(sid / "dataset" / "test.csv")
    assert len(test) == 4866 and test["item_sid"].str.startswith("<a_").all()


def test_minionerec_shipped_index_has_collisions_we_detect(office_cell):
    root, data, _ = office_cell
    with pytest.raises(ValueError, match="share the SID"):
        load_index(data / "source.index.json", n_items=3459)


def test_office_evaluation_is_always_valid(office_cell, tiny_model_dir):
    from genrec.evaluate import evaluate
    from genrec.models import load_causal_lm, load_tokenizer
    from genrec.rl.run import run_rl
    from genrec.sft import add_sid_tokens

    root, data, sid = office_cell
    index = load_index(sid / "office.index.json")
    items = {int(k): v for k, v in json.loads((data / "item.json").read_text()).items()}
    tok = load_tokenizer({"path": str(tiny_model_dir)})
    model = load_causal_lm({"path": str(tiny_model_dir)})
    add_sid_tokens(model, tok, index, items)
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    from genrec.settings import RLSettings

    run_rl(RLSettings(), str(ckpt), str(root / "policy.json"))
    metrics = evaluate(
        EvalSettings(num_beams=10, batch_size=16, max_users=48),
        str(root / "policy.json"),
        str(data / "test.csv"),
        str(sid / "office.index.json"),
        str(root / "eval_results.json"),
        str(root / "metrics.json"),
    )
    rows = json.loads((root / "eval_results.json").read_text())
    valid = {"".join(v) for v in index.values()}
    assert len(rows) == 48 and all(len(r["predict"]) == 10 and set(r["predict"]) <= valid for r in rows)
    assert metrics["invalid_rate"] == 0.0 and metrics["n"] == 48


def test_minionerec_shipped_index_imported_as_a_method(office_cell):
    root, data, _ = office_cell
    out = root / "imported"
    build_sids(
        SIDSettings(method="import"),
        root / "emb.npy",
        **dataset_inputs(data),
        index_json=out / "office.index.json",
        stats_json=out / "s.json",
        dataset_dir=out / "dataset",
    )
    index = load_index(out / "office.index.json", n_items=3459)
    stats = json.loads((out / "s.json").read_text())
    # MiniOneRec's shipped SIDs: 15 collision groups (30 items), separated by a 4th <d_r> level
    assert stats["collision_rate_before"] == pytest.approx(15 / 3459) and stats["collision_rate_after"] == 0
    assert {len(v) for v in index.values()} == {4} and stats["levels"][0]["codes_used"] == 88


def test_office_sft_with_every_task(office_cell, tiny_model_dir, tmp_path):
    """All five SFT tasks on real titles and descriptions, LoRA mode; no prompt holds its answer."""
    from genrec.data.format import read_items
    from genrec.models import load_causal_lm, load_tokenizer
    from genrec.prompts import task_example
    from genrec.settings import SFT_TASKS
    from genrec.sft import add_sid_tokens, task_samples
    from genrec.sids.format import sid_strings
    from genrec.training.rows import split_rows

    _, data, sid = office_cell
    tasks = {"next_sid": 1.0, "title_history": 1.0, "title2sid": 0.02, "sid2title": 0.02, "desc2sid": 0.02}
    assert set(tasks) == set(SFT_TASKS)
    items, index = read_items(data / "item.json"), load_index(sid / "office.index.json")
    tok = load_tokenizer({"path": str(tiny_model_dir)})
    add_sid_tokens(load_causal_lm({"path": str(tiny_model_dir)}), tok, index, items)
    rows = split_rows(str(data / "train.csv"), len(items), 64, seed=0)
    mix = task_samples(tasks, rows, items, sid_strings(index), seed=0)
    assert {name for name, _ in mix} == set(tasks)
    for name, kw in mix:
        ex = task_example(tok, name, 256, **kw)
        n_prompt = ex["labels"].count(-100)
        prompt = tok.decode(ex["input_ids"][:n_prompt])
        answer = tok.decode(ex["input_ids"][n_prompt:-1]).replace(" ", "")
        assert len(ex["input_ids"]) <= 256
        # real histories may hold the target itself (a repeat purchase): data, not the template
        repeat = answer in {h.replace(" ", "") for h in kw.get("history", ())}
        assert repeat or answer not in prompt.replace(" ", ""), (name, answer)
    _, log = train_sft(
        tmp_path, data, sid / "office.index.json", tiny_model_dir, mode="lora", tasks=tasks, max_train_samples=64,
        learning_rate=3e-3,
    )  # fmt: skip
    assert log["task_samples"]["next_sid"] == 64 and log["task_samples"]["desc2sid"] > 0
    assert log["loss_curve"][-1]["loss"] < log["loss_curve"][0]["loss"]
