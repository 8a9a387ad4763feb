import json

import pytest

from genrec.llm.generate import evaluate_chat
from genrec.llm.sft import run_chat_sft
from genrec.settings import SFTSettings
from genrec.training.checkpoints import load_checkpoint


def _data(path, n, offset=0):
    rows = [{"instruction": f"Which brand makes product {i}?", "output": ["Acme", "Bolt", "Crest"][i % 3]}
            for i in range(offset, offset + n)]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.mark.parametrize("mode", ["full", "lora", "qlora"])
def test_each_method_trains_on_chats_and_its_loss_falls(tmp_path, tiny_model_dir, mode):
    from tiny import make_tiny_model_dir

    train, valid = _data(tmp_path / "train.jsonl", 48), _data(tmp_path / "valid.jsonl", 12, offset=48)
    lr = 3e-3 if mode == "full" else 1e-2
    # 4-bit NF4 quantises in blocks of 64 inputs: real models' widths are multiples of it
    base = make_tiny_model_dir(tmp_path / "base", hidden=64) if mode == "qlora" else tiny_model_dir
    s = SFTSettings(model={"path": str(base)}, mode=mode, epochs=4, batch_size=8, learning_rate=lr)
    run_chat_sft(s, train, valid, str(tmp_path / "ckpt"), str(tmp_path / "log.json"))
    log = json.loads((tmp_path / "log.json").read_text())
    curve = [p["loss"] for p in log["loss_curve"]]
    # a random 2-layer model: full training moves the answer tokens fast, rank-8 adapters slowly
    first, last = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    assert len(curve) >= 6 and last < (0.9 if mode == "full" else 0.98) * first, curve
    assert log["train_examples"] == 48 and log["mode"] == mode and 0 < log["trainable_params"] <= log["total_params"]
    assert (log["trainable_params"] < log["total_params"]) == (mode != "full")
    model, tok = load_checkpoint(tmp_path / "ckpt")
    assert model is not None and len(tok) == model.get_input_embeddings().num_embeddings
    m = evaluate_chat(str(tmp_path / "ckpt"), valid, str(tmp_path / "metrics.json"), str(tmp_path / "answers.json"),
                      max_new_tokens=4)  # fmt: skip
    assert m == json.loads((tmp_path / "metrics.json").read_text()) and m["n"] == 12
    assert all(0 <= m[k] <= 100 and m["ci95"][k][0] <= m[k] <= m["ci95"][k][1] for k in ("ROUGE-1", "BLEU"))
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert [a["reference"] for a in answers] == ["Acme", "Bolt", "Crest"] * 4 and m["tokens_per_s"] > 0


def test_frozen_mode_is_refused(tmp_path, tiny_model_dir):
    train = _data(tmp_path / "train.jsonl", 8)
    with pytest.raises(ValueError, match="mode frozen"):
        run_chat_sft(SFTSettings(model={"path": str(tiny_model_dir)}, mode="frozen"), train, train, "o", "l.json")
