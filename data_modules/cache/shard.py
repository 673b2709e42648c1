"""Which part of a source one build process takes (``ecg-dan cache ... --shard K/N``).

A source is split by the unit its build decides on as a whole (a participant, a patient, a
PTB-XL record), so every decision a build makes about a unit (one ECG per patient, an
outcome row without its ECG, duplicate files) is taken inside one shard, and merging the
parts (``ecg-dan cache merge``) gives the single-process cache. A unit's shard is a stable
hash of its key, the same on every machine and Python version, so any scheduler (a SLURM
array, ``xargs -P``, several machines) can run the parts independently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``; ``Shard(0, 1)`` (:data:`WHOLE`) is the whole
    source."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected K/N with "
                             "0 <= K < N")

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        """``"K/N"`` (0-based K, e.g. ``3/16``) or None/empty for the whole source."""
        if not text:
            return WHOLE
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m:
            raise ValueError(f"--shard {text!r}: expected K/N, e.g. 0/4 (K from 0 to N-1)")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def whole(self) -> bool:
        return self.count == 1

    def holds(self, key: Any) -> bool:
        """Whether the unit named ``key`` (an id, converted with ``str``) is in this shard."""
        if self.count == 1:
            return True
        h = hashlib.sha1(str(key).encode()).digest()
        return int.from_bytes(h[:8], "big") % self.count == self.index

    def config(self) -> dict[str, str]:
        """The build-config entry of a part (none for the whole source): ``merge`` checks the
        parts are 0..N-1 of one N and drops it, so the merged config equals a whole build's."""
        return {} if self.whole else {"shard": f"{self.index}/{self.count}"}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(0, 1)
