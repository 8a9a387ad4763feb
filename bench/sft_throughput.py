"""SFT training throughput and model FLOPs utilisation (MFU) of full fine-tuning and LoRA.

Runs our SFT training path (genrec.training: Trainer, left-padded batches, response-only loss on the
last logits, LoRA with trainable SID rows) on a random-initialised model of a real shape, with
synthetic examples of a fixed length, and times the optimizer steps after a warm-up.

    .venv/bin/python bench/sft_throughput.py                               # CPU: a scaled-down Qwen2.5 shape
    python bench/sft_throughput.py --shape qwen2.5-0.5b --name sft_throughput_gpu   # on a GPU, bf16
    accelerate launch --config_file src/genrec/training/zero2_accelerate.yaml --num_processes 1 \\
        bench/sft_throughput.py --shape qwen2.5-0.5b --modes full --name sft_throughput_zero2   # DeepSpeed ZeRO-2

Model FLOPs per trained token (the PaLM convention: recomputation by gradient checkpointing is
not counted): 6 N for full fine-tuning and 4 N for LoRA (no weight gradients of frozen matrices),
N the non-embedding matrix parameters; plus 12 L T d for attention scores; plus the LM head over
the positions it runs on (the response and the token before it: ``logits_to_keep``), 6 V d (full)
or 4 V d (LoRA) per such position. MFU divides by the GPU's dense bf16 peak. Writes
bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from shapes import SHAPES, make_model  # bench/shapes.py (the script's folder is on sys.path)

from genrec.devices import peak_memory_gb, reset_peak_memory
from genrec.models import parameter_count
from genrec.settings import SFTSettings
from genrec.training.modes import prepare_model
from genrec.training.trainer import build_trainer, seed_everything, training_arguments

REPO = Path(__file__).resolve().parents[1]

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A6000": 155e12}  # dense TFLOP/s
N_SID_TOKENS = 24  # new token rows trained with LoRA (3 levels x 8 codes, as the default job)
RESPONSE = 4  # 3 SID tokens + end of turn


def flops_per_token(model, mode: str, seq: int) -> float:
    """Model FLOPs per trained token (see the module docstring)."""
    cfg = model.config
    d, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    emb = model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "lora_" not in name) - emb
    per_param = 6 if mode == "full" else 4
    head = per_param * vocab * d * (RESPONSE + 1) / seq
    return per_param * n + 12 * layers * seq * d + head


def run_mode(mode: str, shape: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    seed_everything(0)
    model = make_model(shape, dtype)
    vocab = model.config.vocab_size
    settings = SFTSettings(mode=mode, batch_size=args.batch_size, learning_rate=1e-4)
    flops = flops_per_token(model, mode, args.seq_len)
    model = prepare_model(model, settings, vocab - N_SID_TOKENS, N_SID_TOKENS)
    gen = torch.Generator().manual_seed(0)
    n = args.batch_size * (args.warmup + args.steps)
    examples = []
    for _ in range(n):
        ids = torch.randint(0, vocab - N_SID_TOKENS, (args.seq_len,), generator=gen).tolist()
        ids[-RESPONSE:] = torch.randint(vocab - N_SID_TOKENS, vocab, (RESPONSE,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * (args.seq_len - RESPONSE) + ids[-RESPONSE:]})
    step_times: list[float] = []
    from transformers import TrainerCallback

    class _Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as work:
        targs = training_arguments(
            settings,
            work,
            len(examples),
            max_steps=args.warmup + args.steps,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_steps=10**6,
            disable_tqdm=True,
            train_sampling_strategy="random",
            gradient_checkpointing=device.type == "cuda" and not args.no_checkpointing,
        )
        trainer = build_trainer(model, SimpleNamespace(pad_token_id=0), targs, examples, None, [_Clock()])
        reset_peak_memory()
        trainer.train()
    measured = step_times[args.warmup :]
    step = statistics.median(measured)
    tokens_per_s = args.batch_size * args.seq_len / step
    peak = (
        next((v for k, v in PEAK_BF16.items() if k in torch.cuda.get_device_name()), None)
        if device.type == "cuda"
        else None
    )
    return {
        "mode": mode,
        "step_time_s_median": step,
        "step_time_s_all": measured,
        "tokens_per_s": tokens_per_s,
        "model_flops_per_token": flops,
        "achieved_tflops": flops * tokens_per_s / 1e12,
        "mfu": flops * tokens_per_s / peak if peak else None,
        "peak_memory_gb": peak_memory_gb(),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": parameter_count(model),
    }


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: full shape on GPU, 4 layers on CPU")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on GPU, 4 on CPU")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per example (Office prompts are ~100)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-checkpointing", action="store_true", help="GPU: no gradient checkpointing")
    ap.add_argument("--name", default="sft_throughput")
    return ap


def main() -> None:
    args = parser().parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    shape = args.shape or ("qwen2.5-0.5b" if cuda else "qwen2.5-0.5b-4layers")
    args.batch_size = args.batch_size or (16 if cuda else 4)
    if not cuda:
        args.steps = min(args.steps, 5)
    results = [run_mode(m, shape, args, device, dtype) for m in args.modes.split(",")]
    if int(os.environ.get("RANK", 0)) != 0:
        return
    out = {
        "benchmark": "sft_throughput",
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()}, {os.cpu_count()} cpus)",
        "dtype": str(dtype).replace("torch.", ""),
        "shape": shape,
        "deepspeed_zero2": os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true",
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "gradient_checkpointing": cuda and not args.no_checkpointing,
        "results": results,
    }
    by_mode = {r["mode"]: r for r in results}
    if "full" in by_mode and "lora" in by_mode:
        out["speedup_lora_vs_full_tokens_per_s"] = by_mode["lora"]["tokens_per_s"] / by_mode["full"]["tokens_per_s"]
    dest = REPO / "bench" / "results" / f"{args.name}.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "results"}, indent=2))
    for r in results:
        print(r["mode"], f"{r['tokens_per_s']:.0f} tok/s", f"{r['achieved_tflops']:.2f} TFLOP/s", f"MFU {r['mfu']}")


if __name__ == "__main__":
    main()
