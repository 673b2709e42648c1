"""What every source reader yields: one ECG as its file holds it.

A source format is one module in this package whose reader returns a :class:`RawRecord`
(id, signal in mV, sampling rate, the lead names the file gives, metadata). Everything
after that is shared: :meth:`RawRecord.in_standard_order` maps leads by name (never by
position), :mod:`data_modules.signal` turns the strip into the 12 x 600 median beat, and
:mod:`data_modules.cache` stores it. The CardioSoft reader returns its richer
:class:`~data_modules.sources.cardiosoft_xml.CardioSoftECG` (the device median and
measurements besides the strip), already in standard order by the file's lead names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_modules.signal.leads import LEADS, N_LEADS


@dataclass(frozen=True)
class RawRecord:
    """One ECG as read from its source: ``signal`` is (n_leads, n_samples) in mV at ``fs``
    Hz, row ``i`` being the lead named ``leads[i]`` in the file."""

    id: str
    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def in_standard_order(self) -> np.ndarray:
        """The signal's rows reordered to ``LEADS`` by name (case-insensitive); ValueError for
        a wrong lead count, an unknown or a duplicate name."""
        x = self.signal
        if x.shape[0] != N_LEADS:
            raise ValueError(f"wrong lead count: {x.shape[0]} leads, expected {N_LEADS}")
        lookup = {n.lower(): i for i, n in enumerate(LEADS)}
        idx = []
        for n in self.leads:
            key = str(n).strip().lower()
            if key not in lookup:
                raise ValueError(f"unknown lead name {n!r}")
            idx.append(lookup[key])
        if len(set(idx)) != N_LEADS:
            raise ValueError(f"duplicate lead names {list(self.leads)}")
        out = np.empty_like(x)
        out[idx] = x
        return out
