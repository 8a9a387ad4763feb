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
    max_prompt: int | None = None,
) -> list[list[dict]]:
    """The top ``k`` next items for each history of item ids (oldest first).

    Args:
        model, tokenizer: a checkpoint from :func:`genrec.models.load_checkpoint`, on the trie's device.
        trie: the index the model was trained with.
        histories: item ids per user.
        k: recommendations per user (at most ``num_beams`` in beam mode).
        num_beams: beams of the constrained search.
        mode: ``beam`` or ``exact`` (every item scored).
        max_prompt: the longest prompt in tokens (the checkpoint's ``prompt_max_length``): longer
            histories lose their oldest items, as in training and evaluation.

    Returns:
        Per user, ``[{"rank", "item_id", "sid", "score"}, ...]`` best first.

    Raises:
        ValueError: ``k`` below 1 (or above ``num_beams`` in beam mode), or a history item is not in the index.
    """
    if k < 1 or (mode == "beam" and k > num_beams):
        raise ValueError(f"k must be between 1 and num_beams ({num_beams}) in beam mode, at least 1 in exact; got {k}")
    sids = trie.item_sids
    for h in histories:
        unknown = [i for i in h if i not in sids]
        if unknown:
            raise ValueError(f"history items {unknown} are not in the SID index (item ids 0..{len(sids) - 1})")
    prompts = [prompt_ids(tokenizer, [sids[i] for i in h], max_prompt) for h in histories]
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m genrec.recommend``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="an SFT or RL final_checkpoint/ directory")
    ap.add_argument("index", help="the cell's SID index.json (the one the checkpoint was trained with)")
    ap.add_argument("--history", type=int, nargs="+", required=True, help="item ids, oldest first")
    ap.add_argument("--items", help="item.json, to print titles")
    ap.add_argument("-k", type=_positive, default=10, help="recommendations (default 10)")
    ap.add_argument("--num-beams", type=_positive, default=_EVAL.num_beams)
    ap.add_argument("--mode", choices=EVAL_MODES, default=_EVAL.mode)
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    from genrec.data.format import read_items
    from genrec.devices import pick_device
    from genrec.sids.format import load_index
    from genrec.training.checkpoints import check_trained_index, is_checkpoint, load_checkpoint, prompt_max_length

    ap = parser()
    args = ap.parse_args(argv)
    try:
        if not is_checkpoint(args.checkpoint):
            raise FileNotFoundError(f"{args.checkpoint} is not a checkpoint directory (no config.json)")
        check_trained_index(args.checkpoint, args.index)
        index = load_index(args.index)
        unknown = [i for i in args.history if i not in index]
        if unknown:
            raise ValueError(f"history items {unknown} are not in {args.index} (item ids 0..{len(index) - 1})")
        titles = {i: m.get("title", "") for i, m in read_items(args.items).items()} if args.items else {}
    except (FileNotFoundError, ValueError) as err:
        ap.exit(2, f"{ap.prog}: error: {err}\n")
    model, tok = load_checkpoint(args.checkpoint)
    device = pick_device()
    model.to(device)
    trie = SIDTrie.from_index(index, tok).to(device)
    beams = max(args.num_beams, args.k)
    for row in recommend(
        model, tok, trie, [args.history], args.k, beams, args.mode, prompt_max_length(args.checkpoint)
    )[0]:
        if titles:
            row["title"] = titles.get(row["item_id"], "")
        print(json.dumps(row))  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
