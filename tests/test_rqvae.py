import numpy as np
import torch

from genrec.sids.build import resolve_collisions
from genrec.sids.rqvae import RQVAEConfig, train_rqvae


def _data(n=300, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, d)) * 3
    return (centers[rng.integers(0, 6, n)] + rng.normal(size=(n, d)) * 0.3).astype(np.float32)


CFG = dict(layers=(32,), e_dim=8, codebook_size=8, epochs=30, batch_size=64, kmeans_iters=20, dead_code_every=10)


def test_loss_falls_and_codes_have_the_right_shape():
    x = _data()
    model, curves = train_rqvae(x, RQVAEConfig(d_in=16, **CFG))
    assert curves[-1]["loss"] < 0.5 * curves[0]["loss"]
    codes = model.codes(torch.as_tensor(x))
    assert codes.shape == (300, 3) and codes.dtype == torch.int64 and 0 <= codes.min() and codes.max() < 8


def test_seeded_training_is_deterministic():
    x = _data()
    a = train_rqvae(x, RQVAEConfig(d_in=16, **CFG))[0].codes(torch.as_tensor(x))
    b = train_rqvae(x, RQVAEConfig(d_in=16, **CFG))[0].codes(torch.as_tensor(x))
    c = train_rqvae(x, RQVAEConfig(d_in=16, **{**CFG, "seed": 1}))[0].codes(torch.as_tensor(x))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dead_codes_are_restarted():
    x = _data()
    cfg = {**CFG, "codebook_size": 32, "dead_code_every": 5}
    _, curves = train_rqvae(x, RQVAEConfig(d_in=16, **cfg))
    assert sum(c["restarted"] for c in curves) > 0
    _, off = train_rqvae(x, RQVAEConfig(d_in=16, **{**cfg, "dead_code_every": 0}))
    assert curves[-1]["dead_codes"] < off[-1]["dead_codes"]


def test_collisions_resolved_on_the_latent():
    x = _data()
    model, _ = train_rqvae(x, RQVAEConfig(d_in=16, **CFG))
    with torch.no_grad():
        z = model.encode(torch.as_tensor(x)).numpy().astype(np.float64)
    codes = model.codes(torch.as_tensor(x)).numpy()
    unique, moved = resolve_collisions(z, codes, [b.astype(np.float64) for b in model.codebooks()])
    assert len({tuple(r) for r in unique.tolist()}) == len(x) and moved > 0


def test_kmeans_init_uses_more_codes_than_random_init():
    x = _data()
    one = {**CFG, "epochs": 1, "dead_code_every": 0}
    with_init = train_rqvae(x, RQVAEConfig(d_in=16, **one))[1][0]
    without = train_rqvae(x, RQVAEConfig(d_in=16, **{**one, "kmeans_init": False}))[1][0]
    assert with_init["dead_codes"] < without["dead_codes"]
