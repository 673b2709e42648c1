"""Errors about the user's data, as opposed to bugs.

The CLI prints a ``DataError`` as one line (file, field, what was found and expected) and
exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and field."""
