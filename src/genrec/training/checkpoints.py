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

from genrec.io import atomic_path, file_sha256, read_json, write_json
from genrec.models import load_causal_lm, prepare_tokenizer

log = logging.getLogger(__name__)

RUN_INFO = "run_info.json"  # written into every checkpoint: stage, settings, base model, mode


def check_trained_index(checkpoint: str | os.PathLike[str], index_json: str | os.PathLike[str]) -> None:
    """Refuse an index other than the one the checkpoint was trained with: another cell's index with the
    same tokens would decode to the wrong items without any error.

    Raises:
        ValueError: the checkpoint's ``run_info.json`` records a different ``sid_index_sha256``.
    """
    want = run_info(checkpoint).get("sid_index_sha256")
    if want and file_sha256(index_json) != want:
        raise ValueError(
            f"{index_json} is not the SID index {checkpoint} was trained with "
            f"({run_info(checkpoint).get('sid_index', 'recorded in its run_info.json')}); its item ids would be wrong"
        )


def prompt_max_length(checkpoint: str | os.PathLike[str]) -> int | None:
    """The longest next-item prompt the checkpoint was trained on (``run_info.json``); None if unrecorded.

    Evaluation and the recommend CLI cut histories to it the way training did (oldest items first).
    """
    return run_info(checkpoint).get("prompt_max_length")


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is one of our checkpoints: a full model or a LoRA/QLoRA adapter directory."""
    p = Path(path)
    return (p / "config.json").is_file() or (p / "adapter_config.json").is_file()


def run_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's ``run_info.json`` (empty when it has none: not made by our stages)."""
    p = Path(path) / RUN_INFO
    return read_json(p, "checkpoint run info") if p.is_file() else {}


def base_run_info(settings, stage: str) -> dict[str, Any]:
    """The ``run_info.json`` fields of every trained checkpoint: its stage and mode, its settings, and
    the base model and quantisation that :func:`load_checkpoint` rebuilds an adapter checkpoint on."""
    return {
        "stage": stage,
        "mode": settings.mode,
        "settings": settings.to_dict(),
        "base_model": dict(settings.model),
        "quantization": "nf4" if settings.mode == "qlora" else None,
    }


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
    """Settings and input contents (files, or every file of a directory): a resumed run must see exactly
    what the crashed run saw."""
    h = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode())
    for p in map(Path, paths):
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(str(f.relative_to(p) if p.is_dir() else "").encode())
                h.update(file_sha256(f).encode())
    return h.hexdigest()


def work_dir(out_dir: str | os.PathLike[str], stage: str) -> Path:
    """Where intermediate checkpoints of the run writing ``out_dir`` live (``.{stage}_checkpoints`` beside it)."""
    return Path(out_dir).resolve().parent / f".{stage}_checkpoints"


MANIFEST = "genrec_checkpoint.json"  # written last into an intermediate checkpoint: it is complete


def seal_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Mark an intermediate checkpoint complete: every file's size and SHA-256, and ``state``, in its manifest.

    Written atomically and last, so a checkpoint without a manifest is one whose save never finished.
    """
    root = Path(path)
    files = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[str(f.relative_to(root))] = {"size": f.stat().st_size, "sha256": file_sha256(f)}
    write_json(root / MANIFEST, {"files": files, "state": state})


def checkpoint_problem(path: str | os.PathLike[str]) -> str | None:
    """Why an intermediate checkpoint cannot be resumed from; ``None`` when it is complete and intact."""
    root = Path(path)
    if not (root / MANIFEST).is_file():
        return "incomplete: its save never finished (no manifest)"
    try:
        files = read_json(root / MANIFEST, "checkpoint manifest")["files"]
    except (ValueError, KeyError) as err:
        return f"its manifest is unreadable ({err})"
    for name, want in files.items():
        f = root / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["size"]:
            return f"{name} is truncated or grown: {f.stat().st_size} bytes, {want['size']} when saved"
        if file_sha256(f) != want["sha256"]:
            return f"{name} is corrupt: its contents changed since it was saved"
    return None


def checkpoint_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``state`` a sealed checkpoint's manifest holds (see :func:`seal_checkpoint`)."""
    return read_json(Path(path) / MANIFEST, "checkpoint manifest")["state"]


def resume_point(work: Path, fingerprint: str, may_reset: bool = True) -> str | None:
    """The newest complete, intact checkpoint in ``work`` if it belongs to this run (same fingerprint).

    Broken checkpoints (a save that never finished, a truncated or corrupt file) are reported and,
    when ``may_reset``, deleted; an older intact one is resumed from instead. When ``work`` belongs to
    another run it is cleared and stamped with ``fingerprint`` (if ``may_reset``: one process, or the
    main process of a multi-GPU job, which runs this first; the others only read).
    """
    stamp = work / "fingerprint.txt"
    if work.is_dir() and stamp.is_file() and stamp.read_text() == fingerprint:
        steps = sorted(
            (p for p in work.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
            key=lambda p: int(p.name.split("-")[-1]),
            reverse=True,
        )
        for ckpt in steps:
            problem = checkpoint_problem(ckpt)
            if problem is None:
                return str(ckpt)
            log.warning("not resuming from %s: %s%s", ckpt, problem, "; deleting it" if may_reset else "")
            if may_reset:
                shutil.rmtree(ckpt)
    if not may_reset:
        return None
    if work.exists():
        if not (stamp.is_file() and stamp.read_text() == fingerprint):
            log.info("discarding checkpoints in %s from a run with other settings or inputs", work)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    stamp.write_text(fingerprint)
    return None
