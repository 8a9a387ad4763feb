import json

import pytest
import torch
from tiny import dataset_inputs, make_tiny_model_dir, train_sft, two_cpu_processes

from genrec.settings import SFTSettings
from genrec.sft import run_sft, task_samples
from genrec.sids.format import load_index
from genrec.training.checkpoints import load_checkpoint
from genrec.training.launch import cli_args, launch_command
from genrec.training.modes import freeze_all_but_rows, lora_target_names


@pytest.fixture(scope="module")
def sid_index(tmp_path_factory, synthetic_data_dir):
    import numpy as np

    from genrec.data.format import read_items
    from genrec.settings import SIDSettings
    from genrec.sids.build import build_sids

    items = read_items(synthetic_data_dir / "item.json")
    tmp = tmp_path_factory.mktemp("sid")
    emb = tmp / "e.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(len(items), 8)).astype(np.float32))
    build_sids(
        SIDSettings(codebook_size=4, n_init=1),
        emb,
        **dataset_inputs(synthetic_data_dir),
        index_json=tmp / "i.json",
        stats_json=tmp / "s.json",
        dataset_dir=tmp / "d",
    )
    return tmp / "i.json"


def _train(tmp_path, data, index, model_dir, **kw):
    return train_sft(tmp_path, data, index, model_dir, **{"batch_size": 16, **kw})


def _falls(log, ratio):
    curve = [p["loss"] for p in log["loss_curve"]]
    return len(curve) >= 3 and curve[-1] < ratio * curve[0]


def test_full_sft_trains_and_saves_a_loadable_checkpoint(tmp_path, tiny_model_dir, synthetic_data_dir, sid_index):
    out, log = _train(tmp_path, synthetic_data_dir, sid_index, tiny_model_dir, epochs=3, learning_rate=3e-3)
    assert _falls(log, 0.7)
    assert log["tokens_per_s"] > 0 and log["trainable_params"] == log["total_params"] > 0
    assert log["eval_curve"] and log["mode"] == "full" and log["peak_memory_gb"] > 0
    assert (tmp_path / "train_loss.png").read_bytes()[:4] == b"\x89PNG"
    model, tok = load_checkpoint(out)
    index = load_index(sid_index)
    for tokens in list(index.values())[:5]:
        for t in tokens:  # every SID level is one token of the saved tokenizer
            assert tok.tokenize(t) == [t]
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp/checkpoint dirs left
    with torch.no_grad():
        ids = torch.tensor([tok.convert_tokens_to_ids(index[0])])
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_frozen_mode_changes_only_the_new_token_rows(tmp_path, tiny_model_dir, synthetic_data_dir, sid_index):
    from transformers import AutoModelForCausalLM

    out, log = _train(
        tmp_path, synthetic_data_dir, sid_index, tiny_model_dir, mode="frozen", epochs=3, learning_rate=3e-2
    )
    assert _falls(log, 0.9)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trained, tok = load_checkpoint(out)
    n_old = base.get_input_embeddings().num_embeddings
    n_new = len(tok) - n_old
    assert log["trainable_params"] == n_new * base.config.hidden_size  # tied: the new rows of one matrix
    new_rows = trained.get_input_embeddings().weight[n_old:]
    base_sd, trained_sd = base.state_dict(), trained.state_dict()
    for name, weight in base_sd.items():
        if weight.shape[0] == n_old and weight.dim() == 2 and ("embed" in name or "lm_head" in name):
            assert torch.equal(trained_sd[name][:n_old], weight), name  # old vocabulary untouched
        else:
            assert torch.equal(trained_sd[name], weight), name  # transformer untouched
    # the new rows moved away from their (seeded) initialisation
    from genrec.data.format import read_items
    from genrec.models import load_tokenizer
    from genrec.sft import add_sid_tokens

    fresh_tok = load_tokenizer({"path": str(tiny_model_dir)})
    add_sid_tokens(base, fresh_tok, load_index(sid_index), read_items(synthetic_data_dir / "item.json"), seed=0)
    init_rows = base.get_input_embeddings().weight[n_old:]
    assert (new_rows - init_rows).abs().max() > 1e-3


def test_frozen_hook_zeroes_old_rows_of_an_untied_head():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=20, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=False,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg)
    params = freeze_all_but_rows(model, first_new=15)
    assert len(params) == 2
    x = torch.randint(0, 20, (2, 6))
    model(input_ids=x, labels=x).loss.backward()
    for p in params:
        assert p.grad[:15].abs().sum() == 0 and p.grad[15:].abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if "layers" in n)


@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_adapter_modes_train_and_reload_with_the_same_logits(
    mode, tmp_path, tiny_model_dir, synthetic_data_dir, sid_index, monkeypatch
):
    captured = {}
    import genrec.training.trainer as trainer

    real_save = trainer.save_checkpoint

    def spy(model, tokenizer, out_dir, info, export_merged=False):
        model.eval()
        x = torch.tensor([tokenizer.convert_tokens_to_ids(list(load_index(sid_index)[3])) + [5, 6, 7]])
        with torch.no_grad():
            captured["x"], captured["logits"] = x, model(input_ids=x).logits
        real_save(model, tokenizer, out_dir, info, export_merged)

    monkeypatch.setattr(trainer, "save_checkpoint", spy)
    # 4-bit NF4 quantises in blocks of 64 inputs: real models' widths are multiples of it
    model_dir = make_tiny_model_dir(tmp_path / "base", hidden=64) if mode == "qlora" else tiny_model_dir
    out, log = _train(
        tmp_path, synthetic_data_dir, sid_index, model_dir,
        mode=mode, epochs=3, learning_rate=1e-2, lora_r=8, lora_alpha=16, export_merged=True,
    )  # fmt: skip
    assert _falls(log, 0.9)
    assert 0 < log["trainable_params"] < 0.5 * log["total_params"]
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    # bitsandbytes' 4-bit CPU kernel rounds its products to bf16; the reloaded model runs the same
    # dequantised NF4 weights in fp32, so QLoRA agrees to bf16 precision and LoRA exactly
    tol = {"atol": 5e-3, "rtol": 1e-2} if mode == "qlora" else {"atol": 2e-4, "rtol": 1e-4}
    model, _ = load_checkpoint(out)
    with torch.no_grad():
        again = model(input_ids=captured["x"]).logits
    torch.testing.assert_close(again, captured["logits"], **tol)
    merged, _ = load_checkpoint(out / "merged")  # the exported merged model is a plain checkpoint
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=captured["x"]).logits, captured["logits"], **tol)


def test_lora_target_that_matches_nothing_fails_before_training(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert lora_target_names(model, SFTSettings(lora_target_modules="qkv").target_modules)
    with pytest.raises(ValueError, match=r"\['query_key_value'\] match no linear layer.*q_proj"):
        lora_target_names(model, ["q_proj", "query_key_value"])


def test_bad_mode_settings_are_named():
    with pytest.raises(ValueError, match="mode must be one of"):
        SFTSettings(mode="freeze")
    with pytest.raises(ValueError, match="unknown task"):
        SFTSettings(tasks={"next_sid": 1, "sid2desc": 1})
    with pytest.raises(ValueError, match="lora_target_modules"):
        SFTSettings(lora_target_modules="everything")
    with pytest.raises(ValueError, match="weight_decay"):
        SFTSettings(mode="frozen", weight_decay=0.01)


def test_missing_base_model_fails_before_training(tmp_path, synthetic_data_dir, sid_index):
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        run_sft(
            SFTSettings(model={"hub": "nobody/no-such-model-xyz"}),
            str(synthetic_data_dir / "train.csv"),
            str(synthetic_data_dir / "valid.csv"),
            str(synthetic_data_dir / "item.json"),
            str(sid_index),
            str(tmp_path / "ckpt"),
            str(tmp_path / "log.json"),
        )
    assert not (tmp_path / "ckpt").exists()


def test_qlora_without_working_bitsandbytes_fails_clearly(
    tmp_path, tiny_model_dir, synthetic_data_dir, sid_index, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match="mode qlora needs bitsandbytes"):
        _train(tmp_path, synthetic_data_dir, sid_index, tiny_model_dir, mode="qlora")
    assert not (tmp_path / "final_checkpoint").exists()


def test_task_mix_follows_the_weights(synthetic_data_dir, sid_index):
    from genrec.data.format import read_items
    from genrec.sids.format import sid_strings
    from genrec.training.rows import split_rows

    items = read_items(synthetic_data_dir / "item.json")
    sids = sid_strings(load_index(sid_index))
    rows = split_rows(str(synthetic_data_dir / "train.csv"), len(items))
    tasks = {"next_sid": 1.0, "title_history": 0.5, "title2sid": 2.0, "sid2title": 1.0, "desc2sid": 1.0}
    mix = task_samples(tasks, rows, items, sids, seed=0)
    count = {t: sum(1 for n, _ in mix if n == t) for t in tasks}
    with_desc = sum(1 for m in items.values() if m.get("description"))
    assert count == {
        "next_sid": len(rows),
        "title_history": round(0.5 * len(rows)),
        "title2sid": 2 * len(items),
        "sid2title": len(items),
        "desc2sid": with_desc,
    }
    assert mix == task_samples(tasks, rows, items, sids, seed=0)  # seeded
    assert [n for n, _ in mix[:50]] != sorted(n for n, _ in mix[:50])  # shuffled together


def test_mixed_tasks_train_and_resume_after_a_crash(
    tmp_path, tiny_model_dir, synthetic_data_dir, sid_index, monkeypatch
):
    """A run killed after its first checkpoint resumes from it instead of starting over."""
    import genrec.training.trainer as trainer

    kw = dict(tasks={"next_sid": 1.0, "title2sid": 1.0, "sid2title": 1.0}, epochs=2, learning_rate=3e-3)
    real_seal = trainer.seal_checkpoint

    def crash_after_first(*a, **k):  # the first checkpoint is complete, then the process dies
        real_seal(*a, **k)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(trainer, "seal_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, synthetic_data_dir, sid_index, tiny_model_dir, **kw)
    assert not (tmp_path / "final_checkpoint").exists()
    assert list((tmp_path / ".sft_checkpoints").glob("checkpoint-*"))
    monkeypatch.setattr(trainer, "seal_checkpoint", real_seal)
    out, log = _train(tmp_path, synthetic_data_dir, sid_index, tiny_model_dir, **kw)
    assert log["resumed_from"] and "checkpoint-" in log["resumed_from"]
    resumed_at = int(log["resumed_from"].rsplit("-", 1)[1])
    assert log["loss_curve"][0]["step"] < resumed_at < log["steps"]  # the curve covers the whole run
    n_items = len(json.loads((synthetic_data_dir / "item.json").read_text()))
    assert log["task_samples"]["title2sid"] == n_items == log["task_samples"]["sid2title"]
    assert (out / "config.json").is_file() and not (tmp_path / ".sft_checkpoints").exists()


def test_multi_gpu_launch_command_uses_accelerate_with_zero2():
    from pathlib import Path

    s = SFTSettings(model={"path": "/m"}, mode="lora")
    cmd = launch_command("genrec.sft", 4, cli_args(s, train_csv="t.csv", out_dir="o", loss_png=None))
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[cmd.index("-m", 3) + 1] == "genrec.sft"
    ds = json.loads(Path(cmd[cmd.index("--deepspeed_config_file") + 1]).read_text())
    assert ds["zero_optimization"]["stage"] == 2
    assert Path(cmd[cmd.index("--config_file") + 1]).is_file()
    settings = json.loads(cmd[cmd.index("--settings") + 1])
    assert SFTSettings.from_dict(settings) == s and "--loss-png" not in cmd


def _cli_args(settings, tmp_path, data, index, **extra):
    """Arguments of ``python -m genrec.sft`` writing ``ckpt/`` and ``log.json`` under ``tmp_path``."""
    paths = {f"{k}_csv": str(data / f"{k}.csv") for k in ("train", "valid")}
    out = {"out_dir": str(tmp_path / "ckpt"), "log_json": str(tmp_path / "log.json")}
    return cli_args(settings, **paths, item_json=str(data / "item.json"), sid_index=str(index), **out, **extra)


def test_cli_runs_sft_like_the_rule(tmp_path, tiny_model_dir, synthetic_data_dir, sid_index):
    """What accelerate launches: ``python -m genrec.sft`` in a fresh process (one CPU process here)."""
    import subprocess
    import sys

    s = SFTSettings(model={"path": str(tiny_model_dir)}, epochs=1, batch_size=32, max_train_samples=64)
    args = _cli_args(s, tmp_path, synthetic_data_dir, sid_index)
    done = subprocess.run([sys.executable, "-m", "genrec.sft", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ckpt" / "config.json").is_file() and json.loads((tmp_path / "log.json").read_text())[
        "steps"
    ] > 0


@pytest.mark.slow
def test_two_process_data_parallel_run_under_accelerate(tmp_path, tiny_model_dir, synthetic_data_dir, sid_index):
    """The multi-GPU path on CPU: accelerate starts two gloo DDP workers; only rank 0 writes outputs.

    (DeepSpeed itself needs GPUs; this runs the same launcher, entry point and rank handling.)
    """
    import subprocess

    cfg = two_cpu_processes(tmp_path / "cpu2.yaml")
    s = SFTSettings(model={"path": str(tiny_model_dir)}, mode="lora", epochs=1, batch_size=8, max_train_samples=64)
    args = _cli_args(s, tmp_path, synthetic_data_dir, sid_index, threads="1")
    cmd = launch_command("genrec.sft", 2, args, accelerate_config=cfg, deepspeed_config=None)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 4  # 64 samples / (8 per process x 2 processes)
    assert load_checkpoint(tmp_path / "ckpt")[0] is not None
