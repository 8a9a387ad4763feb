import json
import random

import pytest
import torch

from genrec.llm.pretrain import (
    based_on,
    catalogue_texts,
    pack_blocks,
    pretrain_stage,
    pretrained_model_spec,
    read_texts,
    run_pretrain,
    split_texts,
)
from genrec.llm.sft import run_chat_sft
from genrec.models import load_tokenizer
from genrec.settings import LLMVariantSettings, PretrainSettings
from genrec.training.checkpoints import load_checkpoint, run_info
from genrec.training.modes import load_base


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's cores are shared
    yield
    torch.set_num_threads(threads)


def _toy_docs(n: int = 200) -> list[str]:
    """Short templated sentences: a small vocabulary in a fixed pattern that a tiny model learns quickly."""
    rng = random.Random(0)
    colours, things = ["red", "blue", "green", "black"], ["pen", "stapler", "folder", "binder", "ruler"]
    return [f"The {rng.choice(colours)} {rng.choice(things)} costs {rng.randrange(2, 9)} dollars." for _ in range(n)]


def _settings(tiny_model_dir, txt, **kw) -> PretrainSettings:
    # 32-token blocks, one evaluation (and checkpoint save) per epoch: a few seconds on one CPU thread
    base = dict(model={"path": str(tiny_model_dir)}, text="file", path=str(txt), max_length=32, batch_size=8,
                evals_per_epoch=1)  # fmt: skip
    return PretrainSettings(**{**base, **kw})


def _pretrain(tmp_path, settings, docs):
    train, heldout = split_texts(docs, 0.1, seed=0)
    out = tmp_path / "final_checkpoint"
    paths = {k: str(tmp_path / f) for k, f in (("log", "train_log.json"), ("png", "loss.png"), ("m", "metrics.json"))}
    metrics = run_pretrain(settings, train, heldout, str(out), paths["log"], paths["png"], paths["m"], threads=1)
    return out, metrics, json.loads((tmp_path / "train_log.json").read_text()), (train, heldout)


def test_full_pretraining_lowers_heldout_perplexity_and_feeds_sft(tmp_path, tiny_model_dir):
    docs = _toy_docs()
    txt = tmp_path / "toy.txt"
    txt.write_text("\n".join(docs) + "\n")
    s = _settings(tiny_model_dir, txt, epochs=3, learning_rate=3e-2)
    out, metrics, log, (train, heldout) = _pretrain(tmp_path, s, docs)

    assert metrics == json.loads((tmp_path / "metrics.json").read_text())
    # a random model over SmolLM2's 49k vocabulary starts near perplexity 49k; the template is easy to learn
    assert metrics["perplexity_after"] < 0.01 * metrics["perplexity_before"], metrics
    assert metrics["train_docs"] == len(train) == 180 and metrics["heldout_docs"] == len(heldout) == 20
    tok = load_tokenizer({"path": str(tiny_model_dir)})
    heldout_blocks = pack_blocks(tok, heldout, 32)
    assert metrics["heldout_blocks"] == len(heldout_blocks)
    assert metrics["heldout_tokens"] == sum(len(b["input_ids"]) - 1 for b in heldout_blocks)
    assert metrics["train_blocks"] == log["train_blocks"] == log["train_samples"] > 20

    curve = [p["loss"] for p in log["loss_curve"]]
    assert len(curve) >= 6 and sum(curve[-3:]) < 0.7 * sum(curve[:3]), curve
    assert log["eval_curve"] and log["mode"] == "full" and (tmp_path / "loss.png").stat().st_size > 0

    model, tok = load_checkpoint(out)
    assert len(tok) == model.get_input_embeddings().num_embeddings and run_info(out)["stage"] == "pretrain"
    spec = pretrained_model_spec(out)
    assert spec == {"path": str(out)}
    # what the workflow does: an llm_variants entry naming the pretraining starts SFT from its checkpoint
    sft = based_on(LLMVariantSettings(model={"path": str(tiny_model_dir)}, pretrain="toy", epochs=1, batch_size=4,
                                      evals_per_epoch=1), str(out))  # fmt: skip
    assert sft.model == spec
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"instruction": f"Price of pen {i}?", "output": "3"}) + "\n" for i in range(8)))
    run_chat_sft(sft, str(chats), str(chats), str(tmp_path / "sft"), str(tmp_path / "sft_log.json"), threads=1)
    assert run_info(tmp_path / "sft")["base_model"] == spec


def test_lora_pretraining_writes_a_merged_model_later_stages_load(tmp_path, tiny_model_dir):
    docs = _toy_docs()
    txt = tmp_path / "toy.txt"
    txt.write_text("\n".join(docs) + "\n")
    s = _settings(tiny_model_dir, txt, mode="lora", epochs=2, learning_rate=1e-2)
    assert not s.export_merged  # forced on by run_pretrain
    out, metrics, log, _ = _pretrain(tmp_path, s, docs)

    assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    spec = pretrained_model_spec(out)
    assert spec == {"path": str(out / "merged")} and metrics["model"] == spec["path"]
    assert metrics["perplexity_after"] < 0.9 * metrics["perplexity_before"], metrics  # rank-16 adapters: slowly
    assert log["trainable_params"] < log["total_params"]
    # later stages load the merged model as a plain base; its weights carry the trained adapters
    tok, merged = load_base(LLMVariantSettings(model=spec))
    _, base = load_base(LLMVariantSettings(model={"path": str(tiny_model_dir)}))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base.state_dict()[name])
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)  # adapters only
    assert len(tok) == merged.get_input_embeddings().num_embeddings


def test_the_rule_entry_pretrains_on_a_catalogue(tmp_path, tiny_model_dir, synthetic_data_dir):
    item_json = synthetic_data_dir / "item.json"
    s = PretrainSettings(model={"path": str(tiny_model_dir)}, text="catalogue", dataset="toy", heldout=0.1,
                         max_length=64, batch_size=8, epochs=1, evals_per_epoch=1)  # fmt: skip
    out = tmp_path / "final_checkpoint"
    pretrain_stage(s, str(item_json), str(out), str(tmp_path / "log.json"), str(tmp_path / "loss.png"),
                   str(tmp_path / "metrics.json"), threads=1)  # fmt: skip
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    n = len(catalogue_texts(item_json))
    assert metrics["heldout_docs"] == round(0.1 * n) and metrics["train_docs"] == n - metrics["heldout_docs"]
    assert run_info(out)["texts"] == [str(item_json)] and pretrained_model_spec(out) == {"path": str(out)}


def test_pretrained_model_spec_and_based_on_refuse_other_directories(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="not a continued-pretraining checkpoint"):
        pretrained_model_spec(tiny_model_dir)  # a model, but no pretraining run_info.json
    with pytest.raises(ValueError, match="missing"):
        pretrained_model_spec(tmp_path / "missing")
    s = LLMVariantSettings(model={"path": str(tiny_model_dir)})
    assert based_on(s, None) is s
    with pytest.raises(ValueError, match="disagree"):
        based_on(s, str(tmp_path))
    with pytest.raises(ValueError, match="disagree"):
        based_on(LLMVariantSettings(model={"path": str(tiny_model_dir)}, pretrain="p"), None)


def test_too_little_text_is_refused(tmp_path, tiny_model_dir):
    s = _settings(tiny_model_dir, tmp_path / "t.txt")
    paths = [str(tmp_path / f) for f in ("ckpt", "log.json", "loss.png", "metrics.json")]
    with pytest.raises(ValueError, match="the 0 heldout documents give no block"):
        run_pretrain(s, ["A blue pen."], [], *paths, threads=1)


def test_pack_blocks_concatenates_documents_with_eos(tiny_model_dir):
    tok = load_tokenizer({"path": str(tiny_model_dir)})
    docs = ["one two three", "four five", "six"]
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    stream = [t for d in ids for t in (*d, tok.eos_token_id)]
    blocks = pack_blocks(tok, docs, 4)
    assert [t for b in blocks for t in b["input_ids"]] == stream[: sum(len(b["input_ids"]) for b in blocks)]
    assert all(len(b["input_ids"]) == 4 for b in blocks[:-1]) and 2 <= len(blocks[-1]["input_ids"]) <= 4
    assert all(b["labels"] == [-100, *b["input_ids"][1:]] for b in blocks)


def test_read_texts_reads_each_shape(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\n  second doc  \n")
    (tmp_path / "a.jsonl").write_text('{"text": "first doc"}\n\n{"text": "second doc", "id": 2}\n')
    (tmp_path / "a.json").write_text(json.dumps([{"text": "first doc"}, "second doc"]))
    for name in ("a.txt", "a.jsonl", "a.json"):
        assert read_texts(tmp_path / name) == ["first doc", "second doc"], name


@pytest.mark.parametrize(
    "name, content, error",
    [
        ("b.jsonl", '{"text": "ok"}\n{"text": \n', r"b\.jsonl line 2: not JSON"),
        ("b.jsonl", '{"text": "ok"}\n{"body": "no text"}\n', r"b\.jsonl line 2: a document is"),
        ("b.jsonl", '{"text": "   "}\n', r"b\.jsonl line 1: a document is"),
        ("b.json", '["ok", {"text": 3}]', r"b\.json record 1: a document is"),
        ("b.json", '{"text": "an object, not an array"}', r"b\.json: a JSON text file holds an array"),
        ("b.json", "[", r"b\.json: not JSON"),
        ("b.txt", "\n \n", r"b\.txt holds no documents"),
        ("b.csv", "text\nok\n", r"b\.csv: pretraining text must be"),
    ],
)
def test_read_texts_names_the_bad_file_and_record(tmp_path, name, content, error):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=error):
        read_texts(tmp_path / name)


def test_read_texts_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretraining text not found"):
        read_texts(tmp_path / "none.txt")


def test_catalogue_texts(tmp_path, synthetic_data_dir):
    items = json.loads((synthetic_data_dir / "item.json").read_text())
    docs = catalogue_texts(synthetic_data_dir / "item.json")
    assert len(docs) == len(items) and all(docs)
    first = items["0"]
    assert docs[0] == f"{first['title']}. {first['description']}"  # plain synthetic text: nothing to clean
    odd = {"0": {"title": "<b>Red</b> Pen", "description": '["Writes &amp; smudges."]'}, "1": {"title": ""},
           "2": {"description": "no title"}, "3": {"title": "Tape"}}  # fmt: skip
    (tmp_path / "item.json").write_text(json.dumps(odd))
    assert catalogue_texts(tmp_path / "item.json") == ["Red Pen. Writes & smudges.", "Tape"]
    (tmp_path / "none.json").write_text(json.dumps({"0": {"title": ""}}))
    with pytest.raises(ValueError, match="no item has a title"):
        catalogue_texts(tmp_path / "none.json")


def test_split_texts_is_seeded_disjoint_and_keeps_copies_together():
    docs = [f"doc {i % 40}" for i in range(50)]  # ten documents appear twice
    train, held = split_texts(docs, 0.2, seed=0)
    assert not set(train) & set(held) and sorted(train + held) == sorted(docs)
    assert 10 <= len(held) <= 11  # a copy of the last chosen document may overshoot by one
    assert (train, held) == split_texts(docs, 0.2, seed=0) and held != split_texts(docs, 0.2, seed=1)[1]
    assert [d for d in docs if d in held] == held  # file order within each side
    assert len(split_texts(docs, 5, seed=0)[1]) in (5, 6)
    for bad in (0.001, 50, 60, 2.5):
        with pytest.raises(ValueError, match="heldout"):
            split_texts(docs, bad, seed=0)
    with pytest.raises(ValueError, match="no training or no held-out"):
        split_texts(["same"] * 5, 1, seed=0)  # one distinct document cannot be on both sides
