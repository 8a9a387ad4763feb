"""Next-item recommendations for given histories, with the decoder that evaluation and RL use.

    python -m genrec.recommend CHECKPOINT INDEX_JSON --history 12 7 33
    python -m genrec.recommend results/synthetic/runs/minilm-rkmeans/sft-full/final_checkpoint \\
        results/synthetic/sid/minilm/rkmeans/synthetic.index.json \\
        --items results/synthetic/data/item.json --history 12 7 33 -k 5 --mode exact

Prints one JSON object per recommendation: rank, item id, SID, log-probability (and the title
when ``--items`` is given), best first.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from genrec.decoding import SIDTrie, rank
from genrec.prompts import prompt_ids
from genrec.settings import EVAL_MODES, EvalSettings

_EVAL = EvalSettings()


def recommend(
    model,
    tokenizer,
    trie: SIDTrie,
    histories: Sequence[Sequence[int]],
    k: int = 10,
    num_beams: int = _EVAL.num_beams,
    mode: str = _EVAL.mode,
) -> list[list[dict]]:
    """The top ``k`` next items for each history of item ids (oldest first).

    Args:
        model, tokenizer: a checkpoint from :func:`genrec.models.load_checkpoint`, on the trie's device.
        trie: the index the model was trained with.
        histories: item ids per user.
        k: recommendations per user (at most ``num_beams`` in beam mode).
        num_beams: beams of the constrained search.
        mode: ``beam`` or ``exact`` (every item scored).

    Returns:
        Per user, ``[{"rank", "item_id", "sid", "score"}, ...]`` best first.

    Raises:
        KeyError: a history item is not in the index.
    """
    sids = trie.item_sids
    for h in histories:
        unknown = [i for i in h if i not in sids]
        if unknown:
            raise KeyError(f"history items {unknown} are not in the SID index ({len(sids)} items)")
    prompts = [prompt_ids(tokenizer, [sids[i] for i in h]) for h in histories]
    ranking = rank(
        model, prompts, trie, tokenizer.pad_token_id, mode=mode, num_beams=num_beams, top_k=k, progress=False
    )
    out = []
    for items, scores in zip(ranking.items.tolist(), ranking.scores.tolist()):
        out.append(
            [
                {"rank": r + 1, "item_id": i, "sid": sids[i], "score": round(s, 5)}
                for r, (i, s) in enumerate(zip(items, scores))
                if i >= 0
            ]
        )
    return out


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m genrec.recommend``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="an SFT or RL final_checkpoint/ directory")
    ap.add_argument("index", help="the cell's SID index.json")
    ap.add_argument("--history", type=int, nargs="+", required=True, help="item ids, oldest first")
    ap.add_argument("--items", help="item.json, to print titles")
    ap.add_argument("-k", type=int, default=10, help="recommendations (default 10)")
    ap.add_argument("--num-beams", type=int, default=_EVAL.num_beams)
    ap.add_argument("--mode", choices=EVAL_MODES, default=_EVAL.mode)
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    from genrec.data.format import read_items
    from genrec.devices import pick_device
    from genrec.sids.format import load_index
    from genrec.training.checkpoints import load_checkpoint

    args = parser().parse_args(argv)
    model, tok = load_checkpoint(args.checkpoint)
    device = pick_device()
    model.to(device)
    trie = SIDTrie.from_index(load_index(args.index), tok).to(device)
    titles = {i: m.get("title", "") for i, m in read_items(args.items).items()} if args.items else {}
    for row in recommend(model, tok, trie, [args.history], args.k, max(args.num_beams, args.k), args.mode)[0]:
        if titles:
            row["title"] = titles.get(row["item_id"], "")
        print(json.dumps(row))  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
