"""Model shapes the benchmarks build random-initialised (no download): one place for both scripts."""

from __future__ import annotations

import torch

SHAPES = {  # Qwen2.5-0.5B's configuration, and a 4-layer cut of it that trains on a laptop CPU
    "qwen2.5-0.5b": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
    ),
    "qwen2.5-0.5b-4layers": dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=4, num_attention_heads=14, num_key_value_heads=2
    ),
}


def make_model(shape: str, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True, **SHAPES[shape]
    )  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).to(dtype)
