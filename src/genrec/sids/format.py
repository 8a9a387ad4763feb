"""Semantic IDs: the one module that formats, parses, loads and checks them.

An index (MiniOneRec's ``{dataset}.index.json``) maps each item id to its list of level
tokens, e.g. ``{"0": ["<a_60>", "<b_159>", "<c_203>"]}``. The SID string is the tokens
concatenated, ``<a_60><b_159><c_203>``. Level ``l`` uses the letter ``chr(ord('a') + l)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from genrec.io import read_json

TOKEN = re.compile(r"<([a-z])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """The token of ``code`` at ``level``.

    >>> sid_token(0, 12), sid_token(2, 3)
    ('<a_12>', '<c_3>')
    """
    return f"<{chr(ord('a') + level)}_{code}>"


def token_code(token: str) -> int:
    """The integer code of a level token.

    >>> token_code("<b_159>")
    159
    """
    m = TOKEN.fullmatch(token)
    if m is None:
        raise ValueError(f"not a SID level token: {token!r}")
    return int(m.group(2))


def format_sid(tokens: Sequence[str]) -> str:
    """Concatenate level tokens into the SID string."""
    return "".join(tokens)


def parse_sid(sid: str) -> list[str]:
    """Split a SID string into its level tokens.

    >>> parse_sid("<a_1><b_22><c_3>")
    ['<a_1>', '<b_22>', '<c_3>']

    Raises:
        ValueError: the string is not a sequence of level tokens.
    """
    s = sid.strip()
    tokens = [m.group(0) for m in TOKEN.finditer(s)]
    if not tokens or "".join(tokens) != s:
        raise ValueError(f"not a SID string: {sid!r}")
    return tokens


def codes_to_index(codes: Sequence[Sequence[int]]) -> dict[int, list[str]]:
    """Integer codes ``(N, levels)`` to an index of level tokens keyed by item id."""
    return {i: [sid_token(level, int(c)) for level, c in enumerate(row)] for i, row in enumerate(codes)}


def check_index(
    index: Mapping[int, Sequence[str]], n_items: int | None = None, where: str = "index", allow_collisions: bool = False
) -> None:
    """Check that an index is well formed and every SID is unique.

    Raises:
        ValueError: ids are not ``0..N-1`` (or not ``n_items`` of them), a token is malformed or
            out of level order, or two items share a SID.
    """
    ids = sorted(index)
    expected = n_items if n_items is not None else len(ids)
    if ids != list(range(expected)):
        raise ValueError(f"{where}: item ids must be exactly 0..{expected - 1} (found {len(ids)} ids)")
    seen: dict[str, int] = {}
    for i in ids:
        tokens = list(index[i])
        if not tokens or any(not TOKEN.fullmatch(t) for t in tokens):
            raise ValueError(f"{where}: item {i} has malformed SID tokens {tokens}")
        letters = [TOKEN.fullmatch(t).group(1) for t in tokens]
        if letters != [chr(ord("a") + level) for level in range(len(tokens))]:
            raise ValueError(
                f"{where}: item {i} has SID tokens {tokens} whose level letters are not a, b, c, ... in order"
            )
        sid = format_sid(tokens)
        if sid in seen and not allow_collisions:
            raise ValueError(f"{where}: items {seen[sid]} and {i} share the SID {sid}; SIDs must be unique")
        seen[sid] = i


def load_index(
    path: str | os.PathLike[str], n_items: int | None = None, allow_collisions: bool = False
) -> dict[int, list[str]]:
    """Load and check an ``index.json`` (``allow_collisions`` only for importing published indices).

    Raises:
        FileNotFoundError, ValueError: missing file, bad JSON or a malformed/colliding index.
    """
    raw = read_json(path, "SID index")
    if not isinstance(raw, dict):
        raise ValueError(f"SID index {path} must be a JSON object of item id -> token list")
    try:
        index = {int(k): list(v) for k, v in raw.items()}
    except (ValueError, TypeError) as err:
        raise ValueError(f"SID index {path}: keys must be item ids and values token lists: {err}") from err
    check_index(index, n_items, where=f"SID index {path}", allow_collisions=allow_collisions)
    return dict(sorted(index.items()))


def sid_strings(index: Mapping[int, Sequence[str]]) -> dict[int, str]:
    """Item id -> SID string."""
    return {i: format_sid(t) for i, t in index.items()}


def vocabulary(index: Mapping[int, Sequence[str]]) -> list[str]:
    """All distinct tokens of an index, ordered by level, then code."""
    tokens = {t for toks in index.values() for t in toks}
    return sorted(tokens, key=lambda t: (t[1], token_code(t)))
