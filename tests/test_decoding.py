import random

import pytest
import torch

from genrec.decoding import SIDTrie, constrained_beam_search, score_all_items
from genrec.models import load_causal_lm, load_tokenizer
from genrec.prompts import prompt_ids
from genrec.sft import add_sid_tokens
from genrec.sids import format_sid


def _index(n=30, shape=(3, 4, 5), seed=0):
    rng = random.Random(seed)
    codes = set()
    while len(codes) < n:
        codes.add(tuple(rng.randrange(k) for k in shape))
    return {i: [f"<{chr(97 + lv)}_{c}>" for lv, c in enumerate(code)] for i, code in enumerate(sorted(codes))}


@pytest.fixture(scope="module")
def model_and_index(tiny_model_dir):
    tok = load_tokenizer({"path": str(tiny_model_dir)})
    model = load_causal_lm({"path": str(tiny_model_dir)})
    index = _index()
    added = add_sid_tokens(model, tok, index, {i: {"title": f"item {i}"} for i in index})
    torch.manual_seed(0)
    new = model.get_input_embeddings().weight[len(tok) - added :]
    with torch.no_grad():  # make the new rows distinct so that scores are not all tied
        new += torch.randn_like(new)
    return model.eval(), tok, index


def _prompts(tok, index):
    sids = [format_sid(index[i]) for i in index]
    # mixed lengths: 1, 3 and 7 history items, so left padding is exercised
    return [prompt_ids(tok, sids[:1]), prompt_ids(tok, sids[3:6]), prompt_ids(tok, sids[10:17])]


def test_beam_search_matches_brute_force_when_beams_cover_catalogue(model_and_index):
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    prompts = _prompts(tok, index)
    assert len({len(p) for p in prompts}) == 3
    items, scores = constrained_beam_search(model, prompts, trie, num_beams=len(index), pad_id=tok.pad_token_id)
    for r, p in enumerate(prompts):
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


def hf_constrained_beam_search(model, prompt, tok, index, num_beams):
    """The reference: Hugging Face beam search with a prefix-allowed-tokens function (MiniOneRec's way).

    Sampling off, no length penalty (scores are sums of SID token log-probabilities), exactly the
    SID length of new tokens; the model's generation-config defaults (top_k/top_p) are overridden.
    """
    seqs = {tuple(tok.convert_tokens_to_ids(t)): i for i, t in index.items()}
    prefixes: dict[tuple, set] = {}
    for s in seqs:
        for k in range(len(s)):
            prefixes.setdefault(s[:k], set()).add(s[k])
    n, length = len(prompt), len(next(iter(seqs)))  # this index: one SID length

    def allowed(_, ids):
        return sorted(prefixes.get(tuple(ids[n:].tolist()), {tok.eos_token_id}))

    out = model.generate(
        input_ids=torch.tensor([prompt]),
        attention_mask=torch.ones(1, n, dtype=torch.long),
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=length,
        min_new_tokens=length,
        do_sample=False,
        top_k=None,
        top_p=None,
        temperature=None,
        length_penalty=0.0,
        early_stopping=True,
        prefix_allowed_tokens_fn=allowed,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id,
    )
    items = [seqs[tuple(s[n:].tolist())] for s in out.sequences]
    return items, out.sequences_scores


def test_vectorised_beam_search_equals_the_hugging_face_oracle(model_and_index):
    """Same top-K SIDs and scores as HF beam search, per user of a mixed-length batch."""
    model, tok, index = model_and_index
    trie = SIDTrie.from_index(index, tok)
    prompts = _prompts(tok, index)
    for beams in (4, 10):
        items, scores = constrained_beam_search(model, prompts, trie, beams, tok.pad_token_id)
        for r, p in enumerate(prompts):
            ref_items, ref_scores = hf_constrained_beam_search(model, p, tok, index, beams)
            assert items[r].tolist() == ref_items
            torch.testing.assert_close(scores[r], ref_scores.float(), atol=1e-4, rtol=1e-4)
