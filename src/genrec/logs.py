"""Logging set-up shared by the workflow scripts: text goes to the rule's log file."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(path: str | os.PathLike[str] | None, level: int = logging.INFO) -> None:
    """Send logging, warnings and uncaught exceptions of this process to ``path``.

    Progress bars (tqdm) write to stderr and some libraries print progress to stdout (the
    Trainer's loss lines), so both are redirected to the same file: a rule's log then shows the
    resolved settings, progress and any traceback in order.

    Args:
        path: the rule's log file; ``None`` logs to stderr only (interactive use).
        level: the root logging level.
    """
    handlers: list[logging.Handler]
    if path is None:
        handlers = [logging.StreamHandler()]
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        stream = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives for the process
        sys.stderr = sys.stdout = stream
        handlers = [logging.StreamHandler(stream)]
    logging.basicConfig(level=level, format=_FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)


def log_settings(logger: logging.Logger, name: str, settings: Any) -> None:
    """Log resolved settings first thing, as JSON, so every log says what it ran with."""
    from dataclasses import asdict, is_dataclass

    payload = asdict(settings) if is_dataclass(settings) else settings
    logger.info("%s settings: %s", name, json.dumps(payload, sort_keys=True, default=str))
