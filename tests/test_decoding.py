import math
import random

import pytest
import torch
from oracle import hf_constrained_beam_search
from tiny import random_index, sid_model

from genrec.decoding import (
    SIDTrie,
    constrained_beam_search,
    memory_per_user,
    rank,
    score_all_items,
    score_catalogue,
)
from genrec.prompts import prompt_ids
from genrec.recommend import recommend
from genrec.sids.format import format_sid


def mixed_length_index(index):
    """Items whose first code is 0 lose their last level; the SIDs stay prefix-free (duplicates dropped)."""
    out, seen = {}, set()
    for sid in index.values():
        short = tuple(sid[:2] if sid[0] == "<a_0>" else sid)
        if short not in seen:
            seen.add(short)
            out[len(out)] = list(short)
    return out


@pytest.fixture(scope="module")
def model_and_index(tiny_model_dir):
    index = random_index()
    model, tok = sid_model(tiny_model_dir, index)
    return model, tok, index


def _prompts(tok, index):
    sids = [format_sid(index[i]) for i in index]
    # mixed lengths: 1, 3 and 7 history items, so left padding is exercised
    return [prompt_ids(tok, sids[:1]), prompt_ids(tok, sids[3:6]), prompt_ids(tok, sids[10:17])]


def _case(model_and_index, mixed):
    """Model, tokenizer, index (one SID length, or two), its trie, and the three mixed-length prompts."""
    model, tok, index = model_and_index
    idx = mixed_length_index(index) if mixed else index
    return model, tok, idx, SIDTrie.from_index(idx, tok), _prompts(tok, index)


@pytest.mark.parametrize("mixed", [False, True])
def test_beam_search_matches_brute_force_when_beams_cover_catalogue(model_and_index, mixed):
    model, tok, idx, trie, prompts = _case(model_and_index, mixed)
    assert len({len(p) for p in prompts}) == 3
    items, scores = constrained_beam_search(model, prompts, trie, num_beams=len(idx), pad_id=tok.pad_token_id)
    for r, p in enumerate(prompts):  # the exact ranking, short SIDs included
        exact = score_all_items(model, p, trie, tok)
        order = exact.argsort(descending=True)
        assert items[r].tolist() == order.tolist()
        torch.testing.assert_close(scores[r], exact[order], atol=1e-4, rtol=1e-4)


def test_only_valid_sids_ever(model_and_index):
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    for beams in (1, 5, 12):
        items, scores = constrained_beam_search(model, _prompts(tok, index), trie, beams, tok.pad_token_id)
        assert items.shape == (3, beams)
        assert ((items >= 0) & (items < len(index))).all()
        for row in items.tolist():
            assert len(set(row)) == len(row)  # distinct SIDs per user
        assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first


def test_more_beams_than_items(model_and_index):
    model, tok, index = model_and_index
    small = {i: index[i] for i in range(4)}
    trie = SIDTrie.from_index(small, tok)
    items, scores = constrained_beam_search(model, _prompts(tok, index)[:1], trie, 6, tok.pad_token_id)
    assert sorted(items[0, :4].tolist()) == [0, 1, 2, 3]
    assert items[0, 4:].tolist() == [-1, -1] and torch.isinf(scores[0, 4:]).all()


def test_sid_token_missing_from_tokenizer(model_and_index):
    _, tok, _ = model_and_index
    with pytest.raises(KeyError, match="not in the tokenizer"):
        SIDTrie.from_index({0: ["<z_999>", "<y_1>"]}, tok)


@pytest.mark.parametrize("mixed", [False, True])
def test_vectorised_beam_search_equals_the_hugging_face_oracle(model_and_index, mixed):
    """Same top-K SIDs and scores as HF beam search, per user and for a padded batch of mixed prompt lengths;
    also when the index holds SIDs of two lengths."""
    model, tok, idx, trie, prompts = _case(model_and_index, mixed)
    assert {len(v) for v in idx.values()} == ({2, 3} if mixed else {3})
    for beams in (4, 10):
        items, scores = constrained_beam_search(model, prompts, trie, beams, tok.pad_token_id)
        for r, p in enumerate(prompts):
            ref_items, ref_scores = hf_constrained_beam_search(model, [p], tok, idx, beams)
            assert items[r].tolist() == ref_items[0]
            torch.testing.assert_close(scores[r], ref_scores[0].float(), atol=1e-4, rtol=1e-4)
        ref_items, ref_scores = hf_constrained_beam_search(model, prompts, tok, idx, beams)  # batched, padded
        assert items.tolist() == ref_items
        torch.testing.assert_close(scores, ref_scores.float(), atol=1e-4, rtol=1e-4)


def test_eos_scoring_equals_the_oracle_that_generates_the_eos(model_and_index):
    """MiniOneRec's scoring: the EOS after each SID is generated and scored. The same beams survive;
    their scores gain the EOS log-probability and their order follows the sum."""
    model, tok, idx, trie, prompts = _case(model_and_index, False)
    eos = tok.eos_token_id
    for beams in (4, 10):
        plain, plain_scores = constrained_beam_search(model, prompts, trie, beams, tok.pad_token_id)
        items, scores = constrained_beam_search(model, prompts, trie, beams, tok.pad_token_id, eos_id=eos)
        ref_items, ref_scores = hf_constrained_beam_search(model, prompts, tok, idx, beams, eos_id=eos)
        assert items.tolist() == ref_items
        torch.testing.assert_close(scores, ref_scores.float(), atol=1e-4, rtol=1e-4)
        for r in range(len(prompts)):
            assert sorted(items[r].tolist()) == sorted(plain[r].tolist())
            assert (scores[r] < plain_scores[r].max()).all()  # the EOS's log-probability is negative
    with pytest.raises(ValueError, match="one length"):
        mixed = _case(model_and_index, True)[3]
        constrained_beam_search(model, prompts, mixed, 4, tok.pad_token_id, eos_id=eos)


def test_ties_follow_the_stated_rule(model_and_index):
    """With every next-token score equal (a zeroed output layer), every SID ties. Hugging Face's order is
    then whatever torch.topk returns; ours is defined: the first SIDs in token order, the same in every
    batch. The scores agree with the oracle's."""
    import copy

    model, tok, index = model_and_index
    flat = copy.deepcopy(model)
    with torch.no_grad():
        flat.lm_head.weight = torch.nn.Parameter(torch.zeros_like(flat.lm_head.weight))
    trie = SIDTrie.from_index(index, tok)
    in_token_order = sorted(index, key=lambda i: tok.convert_tokens_to_ids(list(index[i])))
    prompts = _prompts(tok, index)
    for beams in (4, 10):
        items, scores = constrained_beam_search(flat, prompts, trie, beams, tok.pad_token_id)
        assert items.tolist() == [in_token_order[:beams]] * len(prompts)
        _, ref_scores = hf_constrained_beam_search(flat, prompts, tok, index, beams)
        torch.testing.assert_close(scores, ref_scores.float(), atol=1e-4, rtol=1e-4)
        alone, _ = constrained_beam_search(flat, prompts[:1], trie, beams, tok.pad_token_id)
        assert alone[0].tolist() == items[0].tolist()
    exact = rank(flat, prompts, trie, tok.pad_token_id, mode="exact", top_k=5, progress=False)
    assert exact.items.tolist() == [sorted(index)[:5]] * len(prompts)  # exact mode: lower item id first


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("chunk", [256, 3])
@pytest.mark.parametrize("mixed", [False, True])
def test_exact_scoring_equals_brute_force(model_and_index, attn, chunk, mixed):
    """One token per shared prefix with a tree mask gives each SID's full-sequence log-probability."""
    model, tok, idx, trie, prompts = _case(model_and_index, mixed)
    before = model.config._attn_implementation
    model.config._attn_implementation = attn
    try:
        exact = score_catalogue(model, prompts, trie, tok.pad_token_id, chunk=chunk)
    finally:
        model.config._attn_implementation = before
    assert exact.shape == (3, len(idx)) and torch.isfinite(exact).all()
    for r, p in enumerate(prompts):
        torch.testing.assert_close(exact[r], score_all_items(model, p, trie, tok), atol=1e-4, rtol=1e-4)
    assert trie.n_inner < len(idx)  # fewer model tokens than one sequence per item


def test_rank_in_both_modes_returns_prompt_order(model_and_index):
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    prompts = _prompts(tok, index)[::-1]  # longest first: rank sorts by length and must undo it
    beam = rank(model, prompts, trie, tok.pad_token_id, num_beams=6, top_k=4, max_batch=2, progress=False)
    items, scores = constrained_beam_search(model, prompts, trie, 6, tok.pad_token_id)
    assert beam.items.tolist() == items[:, :4].tolist() and beam.batch_size == 2
    torch.testing.assert_close(beam.scores, scores[:, :4], atol=1e-5, rtol=1e-5)
    exact = rank(model, prompts, trie, tok.pad_token_id, mode="exact", top_k=len(index) + 3, progress=False)
    for r, p in enumerate(prompts):
        full = score_all_items(model, p, trie, tok)
        assert exact.items[r, : len(index)].tolist() == full.argsort(descending=True).tolist()
    assert (exact.items[:, len(index) :] == -1).all()
    with pytest.raises(ValueError, match="top_k 7 > num_beams 6"):
        rank(model, prompts, trie, tok.pad_token_id, num_beams=6, top_k=7)
    with pytest.raises(ValueError, match="unknown decoding mode"):
        rank(model, prompts, trie, tok.pad_token_id, mode="sample")


def test_batch_size_fits_memory_and_halves_on_oom(model_and_index, monkeypatch, caplog):
    import genrec.decoding as decoding

    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    prompts = _prompts(tok, index) * 3
    per_user = memory_per_user(model, max(map(len, prompts)), trie, "beam", 10)
    assert per_user > memory_per_user(model, max(map(len, prompts)), trie, "beam", 2)
    monkeypatch.setattr("genrec.devices.available_memory_bytes", lambda device: 5 * per_user)
    with caplog.at_level("INFO", logger="genrec.decoding"):
        got = rank(model, prompts, trie, tok.pad_token_id, num_beams=10, max_batch=64, progress=False)
    assert got.batch_size == 2  # half of 5 users' worth of memory
    assert "batch size 2" in caplog.text
    with pytest.raises(MemoryError, match="lower eval.num_beams"):
        rank(model, prompts, trie, tok.pad_token_id, num_beams=10, memory_fraction=0.1, progress=False)

    real = decoding.constrained_beam_search

    def small_batches_only(model, batch, *args, **kwargs):
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(decoding, "constrained_beam_search", small_batches_only)
    halved = rank(model, prompts, trie, tok.pad_token_id, num_beams=10, max_batch=4, progress=False)
    assert halved.batch_size == 1 and halved.items.tolist() == got.items.tolist()


def test_prefix_sids_are_refused(model_and_index):
    _, tok, _ = model_and_index
    with pytest.raises(ValueError, match="is a prefix of"):
        SIDTrie.from_index({0: ["<a_1>", "<b_1>"], 1: ["<a_1>"]}, tok)
    with pytest.raises(ValueError, match="is a prefix of"):
        SIDTrie.from_index({0: ["<a_1>"], 1: ["<a_1>", "<b_1>"]}, tok)
    with pytest.raises(ValueError, match="equal to"):
        SIDTrie.from_index({0: ["<a_1>", "<b_2>"], 1: ["<a_1>", "<b_2>"]}, tok)


def test_recommend_uses_the_shared_decoder(model_and_index):
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    histories = [[0], [3, 4, 5]]
    recs = recommend(model, tok, trie, histories, k=3, num_beams=5)
    prompts = [prompt_ids(tok, [format_sid(index[i]) for i in h]) for h in histories]
    items, scores = constrained_beam_search(model, prompts, trie, 5, tok.pad_token_id)
    for r in range(2):
        assert [x["item_id"] for x in recs[r]] == items[r, :3].tolist()
        assert [x["rank"] for x in recs[r]] == [1, 2, 3]
        assert all(x["sid"] == format_sid(index[x["item_id"]]) for x in recs[r])
    with pytest.raises(ValueError, match=r"history items \[999\] are not in the SID index"):
        recommend(model, tok, trie, [[1, 999]])
    for k in (0, -5, 6):
        with pytest.raises(ValueError, match="k must be between 1 and num_beams"):
            recommend(model, tok, trie, histories, k=k, num_beams=5)


def test_recommend_cuts_long_histories_as_training_does(model_and_index):
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    long = [i % len(index) for i in range(400)]
    budget = len(prompt_ids(tok, [format_sid(index[i]) for i in long[-5:]]))
    kept = [i % len(index) for i in range(395, 400)]  # the newest five items fit the budget
    assert recommend(model, tok, trie, [long], k=3, num_beams=5, max_prompt=budget) == recommend(
        model, tok, trie, [kept], k=3, num_beams=5
    )


def test_evaluate_in_exact_mode_equals_beams_covering_the_catalogue(model_and_index, tmp_path):
    import json

    import pandas as pd

    from genrec.evaluate import evaluate
    from genrec.settings import EvalSettings

    model, tok, index = model_and_index
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "policy.json").write_text(json.dumps({"checkpoint": str(tmp_path / "ckpt")}))
    (tmp_path / "index.json").write_text(json.dumps({str(i): v for i, v in index.items()}))
    rng = random.Random(1)
    rows = []
    for u in range(6):
        hist = [rng.randrange(len(index)) for _ in range(1 + u)]
        rows.append(
            {
                "user_id": f"u{u}",
                "history_item_title": str([f"item {i}" for i in hist]),
                "item_title": "t",
                "history_item_id": str(hist),
                "item_id": rng.randrange(len(index)),
                "history_item_sid": str([format_sid(index[i]) for i in hist]),
                "item_sid": "",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "test.csv", index=False)
    got = {}
    for mode in ("beam", "exact"):
        settings = EvalSettings(mode=mode, num_beams=len(index), top_k=20)
        out = (tmp_path / f"{mode}_results.json", tmp_path / f"{mode}_metrics.json")
        got[mode] = evaluate(settings, tmp_path / "policy.json", tmp_path / "test.csv", tmp_path / "index.json", *out)
        got[mode]["rows"] = json.loads(out[0].read_text())
        assert json.loads(out[1].read_text())["settings"]["mode"] == mode
    assert [r["predict"] for r in got["beam"]["rows"]] == [r["predict"] for r in got["exact"]["rows"]]
    for name in ("HR@1", "HR@20", "NDCG@10", "MRR", "invalid_rate"):
        assert got["beam"][name] == got["exact"][name]
    assert got["exact"]["invalid_rate"] == 0 and all(len(r["predict"]) == 20 for r in got["exact"]["rows"])


def test_generation_config_cannot_change_the_result(model_and_index):
    """MiniOneRec's beam search inherits the instruct model's top_k/top_p; ours reads no generation config."""
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    prompts = _prompts(tok, index)
    before = constrained_beam_search(model, prompts, trie, 5, tok.pad_token_id)
    saved = model.generation_config.to_dict()
    try:
        model.generation_config.update(do_sample=True, top_k=2, top_p=0.5, temperature=3.0, length_penalty=5.0)
        after = constrained_beam_search(model, prompts, trie, 5, tok.pad_token_id)
    finally:
        model.generation_config.update(**saved)
    assert before[0].tolist() == after[0].tolist() and torch.equal(before[1], after[1])


def test_exact_scoring_refuses_sliding_window_attention(model_and_index):
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, use_sliding_window=True, sliding_window=8, max_window_layers=0,
    )  # fmt: skip
    sliding = Qwen2ForCausalLM(cfg).eval()
    with pytest.raises(ValueError, match="sliding-window"):
        score_catalogue(sliding, _prompts(tok, index), trie, tok.pad_token_id)


@pytest.mark.parametrize("mixed", [False, True])
def test_stochastic_beam_search_samples_distinct_index_sids_with_their_true_scores(model_and_index, mixed):
    model, tok, idx, trie, prompts = _case(model_and_index, mixed)
    gen = torch.Generator().manual_seed(0)
    items, logp = constrained_beam_search(model, prompts, trie, 16, tok.pad_token_id, temperature=1.5, generator=gen)
    assert items.shape == (3, 16) and ((items >= 0) & (items < len(idx))).all()
    assert all(len(set(r)) == 16 for r in items.tolist())  # without replacement: a group of distinct SIDs
    for r, p in enumerate(prompts):
        exact = score_all_items(model, p, trie, tok)
        torch.testing.assert_close(logp[r], exact[items[r]], atol=1e-4, rtol=1e-4)
    again = constrained_beam_search(
        model, prompts, trie, 16, tok.pad_token_id, temperature=1.5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again[0], items)  # seeded
    other = constrained_beam_search(
        model, prompts, trie, 16, tok.pad_token_id, temperature=1.5, generator=torch.Generator().manual_seed(1)
    )
    assert not torch.equal(other[0], items)  # it samples
    everything, _ = constrained_beam_search(model, prompts, trie, len(idx), tok.pad_token_id, temperature=1.0)
    assert all(sorted(r) == sorted(idx) for r in everything.tolist())  # k = catalogue: every item once
    with pytest.raises(ValueError, match="temperature must be > 0"):
        constrained_beam_search(model, prompts, trie, 4, tok.pad_token_id, temperature=0)


def _constrained_sampling_probs(model, prompt, trie, temperature):
    """Each item's probability under level-by-level sampling from the allowed children's tempered softmax."""
    out = torch.zeros(len(trie.items))
    for j, leaf in enumerate(trie.item_node.tolist()):
        path, node = [], leaf
        while node != 0:  # walk up to the root
            parent = int((trie.child_node == node).any(1).nonzero()[0])
            path.append((parent, node))
            node = parent
        path.reverse()
        ids = torch.tensor([list(prompt) + [int(trie.node_token[n]) for _, n in path]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        total = 0.0
        for level, (parent, node) in enumerate(path):
            kids = trie.children[parent][trie.children[parent] >= 0]
            step = torch.log_softmax(logp[len(prompt) - 1 + level, kids] / temperature, -1)
            total += float(step[(kids == trie.node_token[node]).nonzero()[0, 0]])
        out[j] = math.exp(total)
    return out


def test_stochastic_beam_search_draws_from_the_tempered_constrained_model(model_and_index):
    """One sample per draw: item frequencies match level-by-level constrained sampling at the temperature."""
    model, tok, idx, trie, prompts = _case(model_and_index, False)
    prompt, temperature, draws = prompts[:1] * 400, 2.0, 5
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(len(idx))
    for _ in range(draws):
        items, _ = constrained_beam_search(model, prompt, trie, 1, tok.pad_token_id, temperature, gen)
        counts += torch.bincount(items[:, 0], minlength=len(idx))
    want = _constrained_sampling_probs(model, prompts[0], trie, temperature)
    assert abs(float(want.sum()) - 1) < 1e-4
    total = 400 * draws
    # every item within 4.5 binomial standard deviations of its expected count
    assert ((counts - total * want).abs() <= 4.5 * (total * want * (1 - want)).sqrt() + 1).all()
    cold, _ = constrained_beam_search(model, prompts, trie, 1, tok.pad_token_id, temperature=1e-4)
    greedy, _ = constrained_beam_search(model, prompts, trie, 1, tok.pad_token_id)
    assert (cold == greedy).all()  # temperature -> 0 with one sample is greedy decoding
