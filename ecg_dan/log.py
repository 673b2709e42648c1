"""The project's logger: messages for the person running a job, printed by global rank 0 only
(under DDP every rank runs the same code; one copy of each message is enough)."""

from __future__ import annotations

import logging
import os
import sys

# Lightning's own rank_zero_only (the same object; its strategies set ``.rank`` on it), taken
# from lightning_utilities so that importing the logger does not import Lightning or torch
from lightning_utilities.core.rank_zero import rank_zero_only

__all__ = ["get_logger", "is_rank_zero"]

# Lightning's rule (lightning.fabric.utilities.rank_zero._get_rank) before it sets ``.rank``
_RANK_VARS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _env_rank() -> int:
    for key in _RANK_VARS:
        if os.environ.get(key) is not None:
            return int(os.environ[key])
    return 0


def is_rank_zero() -> bool:
    """Global rank 0: the rank Lightning set, else (Lightning not started) the launcher's."""
    rank = getattr(rank_zero_only, "rank", None)
    return (_env_rank() if rank is None else rank) == 0


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
