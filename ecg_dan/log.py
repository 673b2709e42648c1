"""The project's logger: messages for the person running a job, printed by global rank 0 only
(under DDP every rank runs the same code; one copy of each message is enough)."""

from __future__ import annotations

import logging
import sys

from lightning.fabric.utilities.rank_zero import rank_zero_only

__all__ = ["get_logger", "is_rank_zero"]


def is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (redirections and captures work)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class _RankZero(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return is_rank_zero() or record.levelno >= logging.ERROR


def get_logger(name: str = "ecg_dan") -> logging.Logger:
    """A child of the ``ecg_dan`` logger. The ``ecg_dan`` and ``data_modules`` loggers write
    plain lines to stdout from rank 0 (warnings included; errors from every rank)."""
    for top in ("ecg_dan", "data_modules"):
        logger = logging.getLogger(top)
        if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
            handler = _StdoutHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.addFilter(_RankZero())
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
    root = logging.getLogger("ecg_dan")
    return root if name == "ecg_dan" else root.getChild(name.removeprefix("ecg_dan."))
