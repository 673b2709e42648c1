"""Errors about the user's data, as opposed to bugs.

The CLI prints a ``DataError`` as one line (file, field, what was found and expected) and
exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DataError", "RecordSkip"]


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and field."""


class RecordSkip(DataError):
    """One record that cannot be used: a cache builder or ``ecg-dan predict`` records it as
    skipped with ``reason`` (its category first, e.g. ``flat lead: ...``) and goes on.
    ``record_id`` is the record's id when it could still be read (else None)."""

    def __init__(self, reason: str, record_id: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record_id = record_id
