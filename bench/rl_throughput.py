"""GRPO throughput: rollouts (prompts/s) and the update's log-probabilities, shared-prompt packing vs TRL's own.

Side by side in one process, on the same prompts, rollouts and model:

* rollouts: the constrained decoder giving each prompt its group of G distinct SIDs, by beam search
  and by stochastic beam search (``sample``);
* update: the policy's per-token log-probabilities and entropies of the G x P rollouts, forward and
  backward, computed (a) as TRL's GRPOTrainer does, one prompt + completion sequence per rollout
  through its fused LM head, and (b) by ``genrec.rl.logps.shared_prompt_logps``, each prompt once with its
  completions packed behind it. Both must give the same values (the max difference is recorded).

    # the default job's trained SmolLM2-135M on its synthetic training users
    .venv/bin/python bench/rl_throughput.py --workdir DIR
    # SmolLM2-135M with Office_Products' index and training prompts from ../shared
    .venv/bin/python bench/rl_throughput.py --data office --name rl_throughput_office
    # on a GPU: a random Qwen2.5-0.5B-shaped model in bf16
    python bench/rl_throughput.py --data office --shape qwen2.5-0.5b --dtype bfloat16 --prompts 16 \
        --name rl_throughput_gpu

Writes bench/results/NAME.json (rl_throughput.json by default).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import sys
from pathlib import Path

import torch

from genrec.decoding import SIDTrie
from genrec.prompts import prompt_ids, sid_ids
from genrec.rl.logps import shared_prompt_logps, trl_batch
from genrec.rl.rollouts import rollout_groups
from genrec.settings import RLSettings
from genrec.sids.format import sid_strings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from decoding import OFFICE, bench_inputs, timed  # noqa: E402 - bench/decoding.py
from shapes import SHAPES  # noqa: E402


def trl_logps(model, ids, mask, k, batch_size):
    """TRL's GRPOTrainer._get_per_token_logps_and_entropies, as the trainer calls it (fused LM head patched in)."""
    from trl import GRPOTrainer

    class _Self:  # the attributes the method reads
        accelerator = type("A", (), {"autocast": staticmethod(contextlib.nullcontext), "is_main_process": True})()

    logps, ent, _ = GRPOTrainer._get_per_token_logps_and_entropies(
        _Self(), model, ids, mask, k, batch_size=batch_size, compute_entropy=True
    )
    return logps, ent


def update(model, method: str, ids, mask, k: int) -> torch.Tensor:
    """One backward pass through the rollouts' log-probabilities and entropies, TRL's way or ours."""
    if method == "trl":
        lp, ent = trl_logps(model, ids, mask, k, batch_size=ids.shape[0])
    else:
        lp, ent = shared_prompt_logps(model, ids, mask, k, compute_entropy=True)
    (lp.sum() + 0.0 * ent.sum()).backward()
    return lp.detach()


def parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/genrec-default", help="default job directory (data: default)")
    ap.add_argument("--data", choices=["default", "office"], default="default")
    ap.add_argument("--office-dir", type=Path, default=OFFICE)
    ap.add_argument("--shape", choices=sorted(SHAPES), help="office: a random model of this shape, not SmolLM2")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per update batch (the default config's)")
    ap.add_argument("--repeats", type=int, default=3, help="timed batches (different prompts) per method")
    ap.add_argument("--name", default="rl_throughput")
    return ap


def main() -> None:
    from trl.trainer.utils import add_fused_lm_head

    args = parser().parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    model, tok, index, split, what = bench_inputs(args, dtype)
    model.to(device)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))  # as GRPOTrainer patches the policy
    sids = sid_strings(index)
    trie = SIDTrie.from_index(index, tok).to(device)
    g, n = args.group_size, args.prompts
    histories = list(split["history"])
    batches = [
        [prompt_ids(tok, [sids[i] for i in h]) for h in histories[r * n : (r + 1) * n]] for r in range(args.repeats + 1)
    ]
    print(f"{what}; {len(index)} items; G={g}, {n} prompts per batch; {device}, {args.dtype}", flush=True)

    rollout_s = {"beam": 0.0, "sample": 0.0}
    update_s = {"trl": 0.0, "shared_prompt": 0.0}
    max_diff = 0.0
    gen = torch.Generator().manual_seed(0)
    for r, prompts in enumerate(batches):
        model.eval()
        with torch.no_grad():
            for mode in ("beam", "sample"):
                settings = RLSettings(method="grpo", rollout=mode, group_size=g)
                decode = functools.partial(rollout_groups, model, prompts, trie, settings, tok.pad_token_id, gen)
                (items, _), t = timed(decode, device)
                if r:  # the first batch warms up
                    rollout_s[mode] += t
        model.train()
        rows = [p for p in prompts for _ in range(g)]
        comps = [sid_ids(tok, sids[int(i)]) for i in items.view(-1)]
        ids, mask, k = trl_batch(rows, comps, tok.pad_token_id, device)
        got = {}
        for method in ("trl", "shared_prompt"):
            model.zero_grad(set_to_none=True)
            got[method], t = timed(functools.partial(update, model, method, ids, mask, k), device)
            if r:
                update_s[method] += t
        max_diff = max(max_diff, float((got["trl"] - got["shared_prompt"]).abs().max()))
    done = n * args.repeats
    result = {
        "model": what,
        "device": torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu ({platform.machine()}, {os.cpu_count()})",
        "torch_threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "settings": {"group_size": g, "prompts_per_batch": n, "timed_batches": args.repeats, "data": args.data},
        "catalogue_items": len(index),
        "prompt_tokens_mean": sum(len(p) for b in batches for p in b) / sum(map(len, batches)),
        "rollout_prompts_per_s": {m: done / s for m, s in rollout_s.items()},
        "update_logps_prompts_per_s": {m: done / s for m, s in update_s.items()},
        "speedup_shared_prompt_logps_vs_trl": update_s["trl"] / update_s["shared_prompt"],
        "max_abs_logp_diff": max_diff,
    }
    print(json.dumps(result, indent=1))
    out = REPO / "bench" / "results" / f"{args.name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
