"""Our checkpoints: saving and loading them (every stage, every mode), and resuming interrupted runs.

A ``final_checkpoint/`` is a Hugging Face model directory (full and frozen modes, GRPO) or LoRA /
QLoRA adapters whose ``run_info.json`` names the base model; :func:`load_checkpoint` loads either
with one call. Intermediate Trainer checkpoints live in a work directory beside the output,
stamped with a fingerprint of the settings and inputs; a rerun resumes from them only when the
fingerprint matches (:func:`resume_point`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from genrec.io import atomic_path, read_json, write_json
from genrec.models import load_causal_lm, prepare_tokenizer

log = logging.getLogger(__name__)

RUN_INFO = "run_info.json"  # written into every checkpoint: stage, settings, base model, mode


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one of our checkpoints: a full model or a LoRA/QLoRA adapter directory."""
    p = Path(path)
    return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()


def run_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's ``run_info.json`` (empty when it has none: not made by our stages)."""
    p = Path(path) / RUN_INFO
    return read_json(p, "checkpoint run info") if p.is_file() else {}


def save_checkpoint(model, tokenizer, out_dir: str, info: dict, export_merged: bool = False) -> None:
    """Write ``final_checkpoint/`` atomically: a full model, or adapters + base-model record for LoRA/QLoRA.

    Args:
        model: the trained model (a PEFT model in lora/qlora modes).
        tokenizer: the extended tokenizer.
        out_dir: the directory to create.
        info: ``run_info.json`` content; must hold ``base_model`` for adapters.
        export_merged: for adapters, also write ``merged/``: a plain model with the adapters merged.
    """
    adapters = hasattr(model, "peft_config")
    with atomic_path(out_dir, is_dir=True) as tmp:
        if adapters:
            # the new token rows are PEFT trainable tokens inside the adapter file; the rest of the
            # (resized) embedding matrix is the base model's, so it is not written again
            model.save_pretrained(tmp, save_embedding_layers=False)
        else:
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(os.path.join(tmp, RUN_INFO), info)
        if adapters and export_merged:
            merged, _ = load_checkpoint(tmp)
            merged.save_pretrained(os.path.join(tmp, "merged"))
            tokenizer.save_pretrained(os.path.join(tmp, "merged"))
            write_json(os.path.join(tmp, "merged", RUN_INFO), {**info, "merged_from": "adapters"})


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
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(p, local_files_only=True))
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

    info = run_info(p)
    if not info:
        raise FileNotFoundError(f"adapter checkpoint {p} lacks {RUN_INFO}, which names its base model")
    base = load_causal_lm(info["base_model"], dtype, quantize_4bit=info.get("quantization") == "nf4")
    if info.get("quantization") == "nf4":
        # Merging into 4-bit weights would re-quantise them (lossy); the dequantised NF4 weights
        # are exactly what the adapters were trained against.
        base = base.dequantize()
    base.resize_token_embeddings(vocab, mean_resizing=False)
    return PeftModel.from_pretrained(base, p).merge_and_unload()


# ----------------------------------------------------------------------------- resuming
def fingerprint(settings, *paths: str | os.PathLike[str]) -> str:
    """Settings and input contents: a resumed run must see exactly what the crashed run saw."""
    h = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode())
    for p in paths:
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def work_dir(out_dir: str | os.PathLike[str], stage: str) -> Path:
    """Where intermediate checkpoints of the run writing ``out_dir`` live (``.{stage}_checkpoints`` beside it)."""
    return Path(out_dir).resolve().parent / f".{stage}_checkpoints"


def resume_point(work: Path, fingerprint: str, may_reset: bool = True) -> str | None:
    """The last checkpoint in ``work`` if it belongs to this run (same fingerprint).

    Otherwise ``work`` is cleared and stamped with ``fingerprint`` when ``may_reset`` (one process,
    or the main process of a multi-GPU job, which runs this first; the others only read).
    """
    from transformers.trainer_utils import get_last_checkpoint

    stamp = work / "fingerprint.txt"
    if work.is_dir() and stamp.is_file() and stamp.read_text() == fingerprint:
        last = get_last_checkpoint(str(work))
        if last:
            return last
    if not may_reset:
        return None
    if work.exists():
        log.info("discarding checkpoints in %s from a run with other settings or inputs", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    stamp.write_text(fingerprint)
    return None
