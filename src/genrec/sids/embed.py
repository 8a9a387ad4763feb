"""Item text to vectors: ``{dataset}.emb-{encoder}-td.npy``, float32, one row per item id.

Two encoders, as in MiniOneRec's ``rq/text2emb``:

* ``sentence``: a sentence-transformers style encoder (all-MiniLM-L6-v2 by default) with mean
  pooling over the attention mask and L2 normalisation (that model's own pooling recipe);
* ``causal_lm``: any causal LM's last hidden state, masked mean pooling, no normalisation
  (MiniOneRec's recipe, e.g. with the default LLM or a Qwen model on a GPU).

The text is title + description ("td"), cleaned but, unlike MiniOneRec, keeping quotes and not
dropping long descriptions (they are truncated to ``max_length`` tokens instead).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from genrec.data.amazon import clean_text
from genrec.data.format import read_items
from genrec.devices import pick_device
from genrec.io import atomic_path, write_json
from genrec.logs import log_settings
from genrec.models import resolve_model
from genrec.settings import EmbedSettings

log = logging.getLogger(__name__)


def item_text(meta: Mapping[str, str]) -> str:
    """The text embedded for one item: cleaned title and description joined by a space.

    >>> item_text({"title": "Blue &amp; Red Pens", "description": "<b>Smooth</b>  ink."})
    'Blue & Red Pens Smooth ink.'
    """
    parts = [clean_text(meta.get(k)) for k in ("title", "description")]
    return " ".join(p for p in parts if p) or "unknown item"


@torch.no_grad()
def encode_texts(texts: list[str], settings: EmbedSettings, device: torch.device | None = None) -> np.ndarray:
    """Encode texts with the configured encoder.

    Args:
        texts: one string per item, in item-id order.
        settings: encoder kind, model, batch size and token limit.
        device: where to run; CUDA when available by default.

    Returns:
        ``(len(texts), hidden)`` float32 array.
    """
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    device = device or pick_device()
    name, kwargs = resolve_model(settings.model)
    tok = AutoTokenizer.from_pretrained(name, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    if settings.kind == "sentence":
        model = AutoModel.from_pretrained(name, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kwargs)
    model.to(device).eval()
    out = []
    for start in tqdm(range(0, len(texts), settings.batch_size), desc="embed", unit="batch"):
        batch = tok(
            texts[start : start + settings.batch_size],
            padding=True,
            truncation=True,
            max_length=settings.max_length,
            return_tensors="pt",
        ).to(device)
        if settings.kind == "sentence":
            hidden = model(**batch).last_hidden_state  # (B, T, H)
        else:
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        if settings.kind == "sentence":
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out.append(pooled.float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def embed_items(settings: EmbedSettings, item_json: str | os.PathLike[str], out_npy: str | os.PathLike[str]) -> None:
    """Embed every item of ``item.json`` and write the ``.npy`` (and ``.npy.json`` info) atomically.

    Raises:
        ValueError: the encoder produced non-finite values.
    """
    log_settings(log, "embed_items", settings)
    torch.manual_seed(settings.seed)
    items = read_items(item_json)
    texts = [item_text(items[i]) for i in range(len(items))]
    emb = encode_texts(texts, settings)
    if not np.isfinite(emb).all():
        raise ValueError("the encoder produced NaN/inf embeddings; check the model and the item text")
    with atomic_path(out_npy) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb)
    write_json(f"{out_npy}.json", {"items": len(items), "dim": int(emb.shape[1]), "settings": settings.to_dict()})
    log.info("wrote %s: %s float32", out_npy, emb.shape)
