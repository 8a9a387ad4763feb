"""Crash-proof training: a run killed with SIGKILL and rerun ends exactly where an uninterrupted run ends.

Each stage is run three ways on the same inputs: uninterrupted (in this process); as the workflow's
entry point in a subprocess killed with ``kill -9`` once a checkpoint in its second epoch is sealed;
and rerun after the work folder was damaged the way crashes damage it (a newer checkpoint holding
only ``config.json``, as a save interrupted by a full disk leaves it, and the newest sealed
checkpoint's weights truncated). The rerun must skip both, say why, resume from the newest intact
checkpoint and produce bit-identical weights, the whole loss curve, and step and resume counts.
Threads are 1 so that CPU reductions are deterministic run to run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genrec.training.checkpoints import MANIFEST
from genrec.training.launch import cli_args

pytestmark = pytest.mark.slow


def _kill_after_sealed(cmd: list[str], work: Path, step: int, timeout: float = 300) -> None:
    """Start ``cmd`` and SIGKILL it as soon as a checkpoint at or after ``step`` is sealed in ``work``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if any(int(p.parent.name.split("-")[-1]) >= step for p in work.glob(f"checkpoint-*/{MANIFEST}")):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no sealed checkpoint at step >= {step} before the run ended:\n{proc.stderr.read()[-3000:]}")


def _damage(work: Path) -> tuple[str, str]:
    """A newer half-written checkpoint and a truncated newest sealed one; returns their names."""
    sealed = sorted(work.glob(f"checkpoint-*/{MANIFEST}"), key=lambda p: int(p.parent.name.split("-")[-1]))
    newest = sealed[-1].parent
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    partial = work / f"checkpoint-{int(newest.name.split('-')[-1]) + 1000}"
    partial.mkdir()
    (partial / "config.json").write_text((newest / "config.json").read_text())
    return partial.name, newest.name


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sft_killed_and_damaged_resumes_to_the_same_model(tmp_path, tiny_model_dir, synthetic_data_dir, caplog):
    from genrec.settings import SFTSettings
    from genrec.sft import run_sft

    index = tmp_path / "index.json"
    _build_index(synthetic_data_dir, index)
    s = SFTSettings(
        model={"path": str(tiny_model_dir)}, tasks={"next_sid": 1.0, "title2sid": 1.0}, epochs=2, batch_size=16,
        learning_rate=3e-3, evals_per_epoch=4, early_stopping_patience=0,
    )  # fmt: skip
    data = {k: str(synthetic_data_dir / f"{k}.csv") for k in ("train", "valid")}

    def paths(root: Path) -> dict:
        return dict(train_csv=data["train"], valid_csv=data["valid"], item_json=str(synthetic_data_dir / "item.json"),
                    sid_index=str(index), out_dir=str(root / "final_checkpoint"),
                    log_json=str(root / "train_log.json"), threads=1)  # fmt: skip

    run_sft(s, **paths(tmp_path / "a"))
    a = json.loads((tmp_path / "a" / "train_log.json").read_text())
    steps_per_epoch = a["planned_steps"] // 2
    work = tmp_path / "b" / ".sft_checkpoints"
    cmd = [sys.executable, "-m", "genrec.sft", *cli_args(s, **paths(tmp_path / "b"))]
    _kill_after_sealed(cmd, work, steps_per_epoch + steps_per_epoch // 2)
    partial, truncated = _damage(work)
    with caplog.at_level("WARNING", logger="genrec.training.checkpoints"):
        run_sft(s, **paths(tmp_path / "b"))
    assert f"{partial}: incomplete" in caplog.text and f"{truncated}: model.safetensors is truncated" in caplog.text
    b = json.loads((tmp_path / "b" / "train_log.json").read_text())
    _same_weights(tmp_path / "a" / "final_checkpoint", tmp_path / "b" / "final_checkpoint")
    assert b["resumes"] == 1 and a["resumes"] == 0 and b["steps"] == a["steps"]
    assert (
        b["loss_curve"] == a["loss_curve"] and b["eval_curve"] == a["eval_curve"] and b["valid_loss"] == a["valid_loss"]
    )
    assert int(b["resumed_from"].rsplit("-", 1)[1]) < int(truncated.split("-")[1])  # an older, intact checkpoint
    assert b["train_time_s"] > 0 and b["tokens_per_s"] > 0 and not work.exists()


def _build_index(data: Path, out: Path) -> None:
    import numpy as np
    from tiny import dataset_inputs

    from genrec.data.format import read_items
    from genrec.settings import SIDSettings
    from genrec.sids.build import build_sids

    n = len(read_items(data / "item.json"))
    np.save(out.with_suffix(".npy"), np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32))
    build_sids(SIDSettings(codebook_size=4, n_init=1), out.with_suffix(".npy"), **dataset_inputs(data),
               index_json=out, stats_json=out.with_name("s.json"), dataset_dir=out.with_name("d"))  # fmt: skip


def test_grpo_killed_and_damaged_resumes_to_the_same_policy(tmp_path, tiny_model_dir, caplog):
    from test_rl import _toy

    from genrec.rl.run import run_rl
    from genrec.settings import RLSettings

    root, ckpt, _ = _toy(tmp_path / "toy", tiny_model_dir)
    s = RLSettings(
        method="grpo", rollout="sample", temperature=2.0, group_size=4, prompts_per_step=2, epochs=2,
        learning_rate=2e-3, beta=0.04, rewards={"exact": 1.0, "prefix": 1.0}, warmup_ratio=0.0, checkpoints_per_epoch=4,
    )  # fmt: skip

    def paths(out: Path) -> dict:
        return dict(sft_checkpoint=str(ckpt), policy_json=str(out / "policy.json"), train_csv=str(root / "train.csv"),
                    sid_index=str(root / "index.json"), out_dir=str(out / "final_checkpoint"), threads=1)  # fmt: skip

    run_rl(s, **paths(tmp_path / "a"))
    work = tmp_path / "b" / ".rl_checkpoints"
    _kill_after_sealed([sys.executable, "-m", "genrec.rl.run", *cli_args(s, **paths(tmp_path / "b"))], work, 12)
    partial, truncated = _damage(work)
    with caplog.at_level("WARNING", logger="genrec.training.checkpoints"):
        run_rl(s, **paths(tmp_path / "b"))
    assert f"{partial}: incomplete" in caplog.text and f"{truncated}: model.safetensors is truncated" in caplog.text
    _same_weights(tmp_path / "a" / "final_checkpoint", tmp_path / "b" / "final_checkpoint")
    a, b = (json.loads((tmp_path / r / "rl_log.json").read_text()) for r in ("a", "b"))
    assert b["resumes"] == 1 and a["resumes"] == 0 and b["optimizer_steps"] == a["optimizer_steps"] == 16
    assert [x["loss"] for x in b["steps"]] == [x["loss"] for x in a["steps"]]
    assert [x["reward_mean"] for x in b["steps"]] == [x["reward_mean"] for x in a["steps"]]
    assert all(x["rollout_s"] > 0 for x in b["steps"])  # the timings of the killed part came back from the checkpoint
    assert b["train_time_s"] > 0 and not work.exists()
