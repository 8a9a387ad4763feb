"""Fine-tuning modes: which parameters train, and how the base model is loaded for them.

- ``full``: every weight trains.
- ``frozen``: only the new token rows of the embedding matrix (and of an untied output head)
  train; a gradient hook zeroes the rows of the base vocabulary (MiniOneRec's ``freeze_LLM``,
  which crashes there).
- ``lora``: PEFT low-rank adapters on the chosen projections, plus the new token rows as PEFT
  trainable tokens (input embedding and, when untied, output head), so a new vocabulary learns
  and is saved with the adapters.
- ``qlora``: the same adapters over a base whose linear layers are 4-bit NF4 (bitsandbytes).

SFT uses all four; GRPO adds new LoRA adapters on an SFT model (:func:`lora_config`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from genrec.models import load_causal_lm, load_tokenizer
from genrec.settings import LoraSettings, SFTSettings


def _embedding_module_names(model) -> tuple[str, str | None]:
    """Names of the input embedding module and of an untied output head (``None`` when tied)."""
    names = {id(m): n for n, m in model.named_modules()}
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == emb.weight.data_ptr()
    return names[id(emb)], None if tied else names[id(out)]


def freeze_all_but_rows(model, first_new: int) -> list[torch.nn.Parameter]:
    """Train only the embedding rows from ``first_new`` on (and the same rows of an untied head).

    Every other parameter gets ``requires_grad=False``; the embedding (and head) matrices keep
    it, with a gradient hook that zeroes the rows of the base vocabulary. With Adam and no weight
    decay a zero gradient is a zero update, so the old rows stay bit-identical.

    Returns:
        The trainable parameters.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    params = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != params[0].data_ptr():
        params.append(out.weight)
    for p in params:
        mask = torch.zeros(p.shape[0], 1, dtype=p.dtype, device=p.device)
        mask[first_new:] = 1
        p.requires_grad_(True)
        p.register_hook(lambda g, m=mask: g * m)
    return params


def trainable_count(model, mode: str, n_new: int) -> int:
    """Parameters that training can change: in frozen mode only the new rows of the (masked) matrices."""
    params = [p for p in model.parameters() if p.requires_grad]
    if mode == "frozen":
        return sum(n_new * p.shape[1] for p in params)
    return sum(p.numel() for p in params)


def lora_target_names(model, targets: Sequence[str]) -> list[str]:
    """Check that every LoRA target names at least one linear layer of ``model``.

    Raises:
        ValueError: a target matches no module; the message lists the linear layer names there are.
    """
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)}
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ValueError(
            f"LoRA target module(s) {missing} match no linear layer of this model; "
            f"its linear layers are named {sorted(linear)}"
        )
    return list(targets)


def _is_linear(module) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def check_bitsandbytes() -> None:
    """Fail early and clearly if bitsandbytes cannot run 4-bit NF4 layers on this machine.

    Raises:
        RuntimeError: bitsandbytes is missing or its 4-bit layer does not run on the device.
    """
    try:
        import bitsandbytes as bnb

        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4").to(device)
        layer(torch.ones(1, 64, device=device))
    except Exception as err:  # noqa: BLE001 - any failure here means QLoRA cannot run
        raise RuntimeError(
            f"mode qlora needs bitsandbytes 4-bit NF4 layers, which do not run here ({type(err).__name__}: {err}); "
            "install bitsandbytes (pip install bitsandbytes) or use mode lora"
        ) from err


def prepare_model(model, settings: SFTSettings, first_new: int, n_new: int):
    """Set the trainable parameters of ``model`` for the settings' mode.

    Returns:
        The model to train (a PEFT model for lora/qlora).
    """
    if settings.mode == "full":
        return model
    if settings.mode == "frozen":
        freeze_all_but_rows(model, first_new)
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    targets = lora_target_names(model, settings.target_modules)
    if settings.mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if not n_new:  # no added tokens (the general track): adapters only
        return get_peft_model(model, lora_config(settings, targets))
    emb_name, head_name = _embedding_module_names(model)
    new_ids = list(range(first_new, first_new + n_new))
    token_rows = {emb_name.rsplit(".", 1)[-1]: new_ids}
    if head_name:
        token_rows[head_name.rsplit(".", 1)[-1]] = new_ids
    return get_peft_model(model, lora_config(settings, targets, trainable_token_indices=token_rows))


def load_base(settings: SFTSettings):
    """Tokenizer and base model for the settings' mode (4-bit NF4 for qlora; bitsandbytes checked first)."""
    if settings.mode == "qlora":
        check_bitsandbytes()
    tokenizer = load_tokenizer(settings.model)
    dtype = torch.float32
    if settings.mode == "qlora" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        dtype = torch.bfloat16  # 4-bit weights compute in bf16 on GPU (QLoRA's recipe)
    model = load_causal_lm(settings.model, dtype, quantize_4bit=settings.mode == "qlora")
    return tokenizer, model


def lora_config(settings: LoraSettings, targets: Sequence[str], **extra):
    """The PEFT ``LoraConfig`` of the settings' rank, alpha and dropout on ``targets`` (checked names).

    ``extra`` adds or overrides keys (``task_type`` is ``CAUSAL_LM`` unless given).
    """
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(targets),
        **{"task_type": "CAUSAL_LM", **extra},
    )
