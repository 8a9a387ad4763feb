import random

import pandas as pd
import pytest
import torch

from genrec.baselines.seqrec import build_model, encode_histories, load_scorer, save_scorer, target_ranks, train
from genrec.metrics import per_row
from genrec.settings import SeqRecSettings

N_ITEMS = 50


def _toy(n_rows, seed):
    """Histories that step by 3 through the catalogue: the next item is fully determined by the last."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        start, length = rng.randrange(N_ITEMS), rng.randrange(2, 8)
        seq = [(start + 3 * j) % N_ITEMS for j in range(length + 1)]
        rows.append({"history": seq[:-1], "item_id": seq[-1]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "kind, loss", [("sasrec", "ce"), ("gru4rec", "ce"), ("sasrec_minionerec", "bce")], ids=lambda v: str(v)
)
def test_learns_a_sequence_rule_far_above_popularity(kind, loss):
    train_df, valid_df, test_df = _toy(2000, 0), _toy(200, 1), _toy(300, 2)
    settings = SeqRecSettings(max_epochs=80, patience=10, loss=loss)
    model, log = train(kind, settings, train_df, valid_df, N_ITEMS, progress=False)
    hist = encode_histories(test_df["history"], N_ITEMS, 10)
    hr10 = sum(per_row(target_ranks(model, hist, torch.tensor(test_df["item_id"].to_numpy())), "HR@10")) / len(hist)
    popular = train_df["item_id"].value_counts().index[:10]
    popularity_hr10 = test_df["item_id"].isin(popular).mean()
    assert popularity_hr10 < 0.35 and hr10 > 0.9
    assert log["best_epoch"] <= log["epochs"] and len(log["curve"]) == log["epochs"]


def test_scorer_round_trip(tmp_path):
    settings = SeqRecSettings(max_epochs=2)
    model, _ = train("sasrec", settings, _toy(200, 0), _toy(50, 1), N_ITEMS, progress=False)
    save_scorer(model, "sasrec", settings, N_ITEMS, tmp_path / "scorer")
    again = load_scorer(tmp_path / "scorer")
    hist = encode_histories([[1, 4, 7], [10]], N_ITEMS, 10)
    torch.testing.assert_close(again(hist), model(hist))


def test_training_is_seeded():
    settings = SeqRecSettings(max_epochs=3)
    a, _ = train("gru4rec", settings, _toy(300, 0), _toy(50, 1), N_ITEMS, progress=False)
    b, _ = train("gru4rec", settings, _toy(300, 0), _toy(50, 1), N_ITEMS, progress=False)
    hist = encode_histories([[1, 4, 7]], N_ITEMS, 10)
    assert torch.equal(a(hist), b(hist))


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec", "sasrec_minionerec"])
def test_padding_does_not_change_scores(kind):
    """A history scores the same with or without left padding: pads are masked (SASRec) or packed away (GRU4Rec)."""
    torch.manual_seed(0)
    model = build_model(kind, N_ITEMS, SeqRecSettings(max_len=6)).eval()
    bare = model(encode_histories([[3, 6]], N_ITEMS, 2))
    padded = model(encode_histories([[3, 6], [1, 2, 3, 4, 5, 6]], N_ITEMS, 6))
    torch.testing.assert_close(padded[:1], bare)
    assert not torch.allclose(padded[1], bare[0])


def test_minionerec_sasrec_has_its_own_output_layer_and_bce_samples_one_other_item():
    from genrec.baselines.seqrec import _loss

    model = build_model("sasrec_minionerec", N_ITEMS, SeqRecSettings())
    assert model.out.bias is not None and model.out.weight.data_ptr() != model.item.weight.data_ptr()
    with pytest.raises(ValueError, match="single block"):
        build_model("sasrec_minionerec", N_ITEMS, SeqRecSettings(blocks=2))
    scores, targets = torch.randn(4, N_ITEMS), torch.tensor([0, 7, 49, 3])
    gen = torch.Generator().manual_seed(0)
    got = _loss(scores, targets, "bce", gen)
    neg = torch.randint(0, N_ITEMS - 1, (4,), generator=torch.Generator().manual_seed(0))
    neg = neg + (neg >= targets).long()
    assert (neg != targets).all()
    pos_term = torch.nn.functional.logsigmoid(scores[torch.arange(4), targets])
    neg_term = torch.nn.functional.logsigmoid(-scores[torch.arange(4), neg])
    torch.testing.assert_close(got, -(pos_term.sum() + neg_term.sum()) / 8)


def test_unknown_kind_and_bad_settings():
    with pytest.raises(ValueError, match="unknown sequential recommender"):
        build_model("caser", N_ITEMS, SeqRecSettings())
    with pytest.raises(ValueError, match="divide by heads"):
        SeqRecSettings(hidden=32, heads=3)


def test_ties_rank_against_the_target():
    class Flat(torch.nn.Module):
        def forward(self, hist):
            return torch.zeros(len(hist), N_ITEMS)

    assert target_ranks(Flat(), encode_histories([[1], [2]], N_ITEMS, 3), torch.tensor([0, 5])) == [N_ITEMS - 1] * 2


def _plateau_toy(n_rows, seed):
    """The step-by-3 rule for half of the rows, one of three popular items for the rest: a model first learns
    popularity, and with MiniOneRec's binary loss and batch its validation score then sits flat near
    most-popular's for tens of epochs before it learns the rule."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_rows):
        start, length = rng.randrange(N_ITEMS), rng.randrange(2, 8)
        seq = [(start + 3 * j) % N_ITEMS for j in range(length + 1)]
        target = rng.choice([0, 1, 2]) if rng.random() < 0.5 else seq[-1]
        rows.append({"history": seq[:-1], "item_id": target})
    return pd.DataFrame(rows)


def test_selection_waits_for_validation_to_leave_the_popularity_plateau():
    """Patience counted from epoch 1 stops on the plateau, at most-popular's level; counted from the first
    epoch that beats most-popular by the margin, training gets past it and beats popularity on test."""
    train_df, valid_df, test_df = _plateau_toy(1000, 0), _plateau_toy(300, 1), _plateau_toy(600, 2)
    base = {"max_epochs": 300, "patience": 3, "loss": "bce", "batch_size": 1024, "learning_rate": 0.003}
    hist = encode_histories(test_df["history"], N_ITEMS, 10)
    targets = torch.tensor(test_df["item_id"].to_numpy())
    results = {}
    for start in ("start", "popularity"):
        model, log = train(
            "sasrec_minionerec",
            SeqRecSettings(**base, patience_from=start),
            train_df,
            valid_df,
            N_ITEMS,
            progress=False,
        )
        results[start] = (sum(per_row(target_ranks(model, hist, targets), "NDCG@10")) / len(hist), log)
    popular = train_df["item_id"].value_counts().index[:10].tolist()
    position = {item: r for r, item in enumerate(popular)}
    popularity_ndcg10 = sum(per_row([position.get(t) for t in test_df["item_id"]], "NDCG@10")) / len(test_df)
    (old, old_log), (new, new_log) = results["start"], results["popularity"]
    floor = old_log["popularity_valid_ndcg@20"] * (1 + SeqRecSettings().plateau_margin)
    assert old_log["valid_ndcg@20"] < floor and old_log["left_plateau_epoch"] == 0  # stopped on the plateau
    assert old < popularity_ndcg10 + 0.02, (old, popularity_ndcg10)
    assert new_log["left_plateau_epoch"] > old_log["epochs"] and new_log["valid_ndcg@20"] > floor
    assert new > popularity_ndcg10 + 0.04, (new, popularity_ndcg10)
    # the rule only decides when to stop: both runs are the same epochs up to the first stop
    assert new_log["curve"][: old_log["epochs"]] == old_log["curve"]
