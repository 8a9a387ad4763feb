"""GPU hours, memory per job and storage of a full experiment matrix, computed (not measured) on paper.

docs/SCALING.md quotes this script's output. The matrix is 2 Amazon datasets x 3 SID methods x 4 SFT
modes x 3 RL variants (none and two GRPO variants) x 2 models (Qwen2.5-1.5B and 3B-Instruct), all
training rows, 50 beams. Compute is model FLOPs (6 N per trained token for full fine-tuning, 4 N for
LoRA/QLoRA/frozen, 2 N per decoded or reference-scored token; N the non-embedding parameters, as
bench/sft_throughput.py counts them) divided by an A100's dense bf16 peak times an assumed model
FLOPs utilisation. No GPU figure of this project has been measured yet, so the utilisation is an
assumption (--mfu), and every hour below scales with 1/mfu.

    .venv/bin/python bench/scaling.py                 # writes bench/results/scaling.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
A100_BF16 = 312e12  # dense bf16 FLOP/s
MODELS = {  # Qwen2.5-*-Instruct configurations: hidden, MLP, layers, attention heads, KV heads; vocabulary 151,936
    "qwen2.5-1.5b": dict(d=1536, mlp=8960, layers=28, heads=12, kv=2, params=1.54e9),
    "qwen2.5-3b": dict(d=2048, mlp=11008, layers=36, heads=16, kv=2, params=3.09e9),
}
DATASETS = {  # MiniOneRec's two categories: training samples (80% of ~48.7k / ~45.3k), items, test rows
    "office": dict(train=38_900, items=3_459, test=4_866),
    "industrial": dict(train=36_300, items=3_686, test=4_533),
}
SFT_MODES = {"full": 6, "lora": 4, "qlora": 4, "frozen": 4}  # FLOPs per parameter per trained token
PROMPT, RESPONSE = 100, 4  # tokens: a 10-item SID history in the chat template; 3 SID tokens + end of turn
SFT_EPOCHS = 10  # MiniOneRec's
TASK_SAMPLES = 4  # MiniOneRec's task mix: about 4 x N_train + 2 x N_items samples per epoch
GRPO_PROMPTS, GRPO_EPOCHS, GROUP = 20_000, 2, 16  # MiniOneRec's rl.sh: 2 epochs, groups of 16 beams
BEAMS = 50


def matrix_params(m: dict) -> float:
    """Non-embedding matrix parameters (attention and MLP of every layer)."""
    head_dim = m["d"] // m["heads"]
    attn = 2 * m["d"] * m["d"] + 2 * m["d"] * m["kv"] * head_dim
    return m["layers"] * (attn + 3 * m["d"] * m["mlp"])


def estimates(mfu: float) -> dict:
    flops_per_s = A100_BF16 * mfu
    out: dict = {"assumed_mfu": mfu, "a100_bf16_peak": A100_BF16, "models": {}}
    for name, m in MODELS.items():
        n = matrix_params(m)
        per_dataset = {}
        for ds, d in DATASETS.items():
            samples = SFT_EPOCHS * (TASK_SAMPLES * d["train"] + 2 * d["items"])
            tokens = samples * (PROMPT + RESPONSE)
            sft = {mode: k * n * tokens / flops_per_s / 3600 for mode, k in SFT_MODES.items()}
            # GRPO per prompt: the prompt once and G completions behind it (shared-prompt scoring), forward and
            # backward for the policy (6 N) and forward for the reference and the old policy (2 N each);
            # rollouts: a prefill and 3 SID steps of G beams (2 N per token)
            update = 10 * n * (PROMPT + GROUP * RESPONSE)
            rollout = 2 * n * (PROMPT + 3 * GROUP)
            grpo = GRPO_EPOCHS * GRPO_PROMPTS * (update + rollout) / flops_per_s / 3600
            evaluation = d["test"] * 2 * n * (PROMPT + 3 * BEAMS) / flops_per_s / 3600
            per_dataset[ds] = {"sft_gpu_h": sft, "grpo_gpu_h": grpo, "eval_gpu_h": evaluation}
        bytes_full = 16 * m["params"]  # fp32 weights, gradients and two Adam moments
        out["models"][name] = {
            "non_embedding_params": n,
            "datasets": per_dataset,
            "memory_gb": {
                "sft_full": bytes_full / 1e9,
                "sft_full_zero2_4gpu": (4 * m["params"] + 12 * m["params"] / 4) / 1e9,
                "sft_lora": 4 * m["params"] / 1e9,  # fp32 base weights; adapters, their states and activations small
                "sft_qlora": 0.55 * m["params"] / 1e9,  # 4-bit NF4 base with double quantisation
                "grpo_full": (bytes_full + 2 * 4 * m["params"]) / 1e9,  # plus the frozen reference in fp32
                "eval_bf16": 2 * m["params"] / 1e9,
            },
            "checkpoint_gb": {"full_fp32": 4 * m["params"] / 1e9, "lora_adapters": 0.05},
        }
    # the matrix: per model and dataset, 3 SID methods x 4 SFT modes; each SFT cell feeds 2 GRPO cells; 3 evaluations
    total = {"sft_jobs": 0, "grpo_jobs": 0, "eval_jobs": 0, "gpu_h": 0.0, "storage_gb": 0.0}
    for m in out["models"].values():
        for ds in DATASETS:
            e = m["datasets"][ds]
            total["sft_jobs"] += 3 * len(SFT_MODES)
            total["grpo_jobs"] += 3 * len(SFT_MODES) * 2
            total["eval_jobs"] += 3 * len(SFT_MODES) * 3
            total["gpu_h"] += 3 * sum(e["sft_gpu_h"].values()) + 3 * len(SFT_MODES) * (
                2 * e["grpo_gpu_h"] + 3 * e["eval_gpu_h"]
            )
            ckpt = m["checkpoint_gb"]
            total["storage_gb"] += 3 * (
                2 * ckpt["full_fp32"] + 2 * ckpt["lora_adapters"]
            )  # SFT: full, frozen; adapters
            total["storage_gb"] += 3 * len(SFT_MODES) * 2 * ckpt["full_fp32"]  # every GRPO cell saves a merged model
    out["matrix"] = total
    return out


def parser() -> argparse.ArgumentParser:
    """This script's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation (not measured)")
    ap.add_argument("--name", default="scaling")
    return ap


def main() -> None:
    args = parser().parse_args()
    out = estimates(args.mfu)
    path = REPO / "bench" / "results" / f"{args.name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for name, m in out["models"].items():
        for ds, e in m["datasets"].items():
            sft = ", ".join(f"{k} {v:.1f}" for k, v in e["sft_gpu_h"].items())
            print(f"{name} {ds}: SFT GPU-h {sft}; GRPO {e['grpo_gpu_h']:.2f}; eval {e['eval_gpu_h']:.3f}")
        print(f"{name} memory GB: " + ", ".join(f"{k} {v:.1f}" for k, v in m["memory_gb"].items()))
    print("matrix:", {k: round(v, 1) for k, v in out["matrix"].items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
