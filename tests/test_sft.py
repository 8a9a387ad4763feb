import json

import torch

from genrec.models import load_checkpoint
from genrec.settings import SFTSettings
from genrec.sft import run_sft
from genrec.sids import load_index


def test_sft_trains_and_saves_a_loadable_checkpoint(tmp_path, tiny_model_dir, synthetic_data_dir):
    import numpy as np

    from genrec.data.format import read_items
    from genrec.settings import SIDSettings
    from genrec.sid import build_sids

    items = read_items(synthetic_data_dir / "item.json")
    emb = tmp_path / "e.npy"
    np.save(emb, np.random.default_rng(0).normal(size=(len(items), 8)).astype(np.float32))
    sid = tmp_path / "sid"
    build_sids(
        SIDSettings(codebook_size=4, n_init=1), emb, synthetic_data_dir, sid / "i.json", sid / "s.json", sid / "d"
    )
    settings = SFTSettings(model={"path": str(tiny_model_dir)}, epochs=3, learning_rate=3e-3, batch_size=16)
    out = tmp_path / "final_checkpoint"
    run_sft(
        settings,
        str(synthetic_data_dir / "train.csv"),
        str(synthetic_data_dir / "valid.csv"),
        str(synthetic_data_dir / "item.json"),
        str(sid / "i.json"),
        str(out),
        str(tmp_path / "train_log.json"),
    )
    log = json.loads((tmp_path / "train_log.json").read_text())
    curve = [p["loss"] for p in log["loss_curve"]]
    assert len(curve) >= 4 and curve[-1] < 0.7 * curve[0]
    assert log["tokens_per_s"] > 0 and log["trainable_params"] == log["total_params"] > 0
    model, tok = load_checkpoint(out)
    index = load_index(sid / "i.json")
    for tokens in list(index.values())[:5]:
        for t in tokens:  # every SID level is one token of the saved tokenizer
            assert tok.tokenize(t) == [t]
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp/work dirs left
    with torch.no_grad():
        ids = torch.tensor([tok.convert_tokens_to_ids(index[0])])
        assert torch.isfinite(model(input_ids=ids).logits).all()
