"""Atomic file output and small JSON helpers.

Every stage writes through these helpers so that a crash or a bad input never leaves a
half-written output behind: data goes to a temporary sibling path that is renamed into place
only once it is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` only if the block finishes without error.

    Args:
        path: the final file or directory.
        is_dir: whether ``path`` is a directory (the temporary one is created empty).

    Yields:
        A temporary sibling of ``path`` (same filesystem, so the final rename is atomic).
    """
    final = Path(path)
    tmp = _tmp_sibling(final, is_dir)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Atomically write ``obj`` as JSON (keys kept in insertion order, UTF-8, no ASCII escaping)."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read a JSON file with an error that names the file and the problem.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {p} is not valid JSON: {err}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {p} is not UTF-8 text: {err}") from err


def json_records(path: str | os.PathLike[str], kind: str) -> list[tuple[Any, str]]:
    """The records of a JSONL file (one per non-blank line) or a JSON array, each with where it is:
    ``"FILE line N"`` or ``"FILE record I"``, for error messages that name it.

    Args:
        kind: what the file holds (``instruction``, ``pairs``, ``text``), for the error when a JSON
            file holds no array.

    Raises:
        ValueError: text that is not UTF-8, a line or file that is not JSON (named), a JSON file
            that is not an array.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p} is not UTF-8 text: {err}") from err
    if p.suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append((json.loads(line), f"{p} line {line_no}"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{p} line {line_no}: not JSON ({err})") from err
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: not JSON ({err})") from err
    if not isinstance(data, list):
        raise ValueError(f"{p}: a JSON {kind} file holds an array of records (or use .jsonl)")
    return [(r, f"{p} record {i}") for i, r in enumerate(data)]
