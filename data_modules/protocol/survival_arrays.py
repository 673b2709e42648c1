"""The one validator of survival inputs (time, event, optional risk).

Splits, samplers, the Cox loss, the C-index, the IPCW metrics and the results tables all
take (time, event[, risk]) and must refuse the same bad values with the same words:
mismatched lengths, an empty sample, non-finite times or risks, events other than 0/1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_FOLLOW_UP_DAYS", "MAX_FOLLOW_UP_YEARS", "as_1d", "beyond_follow_up",
           "check_events", "check_survival"]

#: Longest follow-up that can be true (longer than any life): a time beyond it (``1e30``,
#: seconds or a date typo read as days) is refused with its ids by every reader of
#: outcomes, not trained on. Times past 60 years but within it are recorded warnings.
MAX_FOLLOW_UP_YEARS = 150
MAX_FOLLOW_UP_DAYS = MAX_FOLLOW_UP_YEARS * 365.25


def beyond_follow_up(time: Any, unit: str = "days") -> NDArray:
    """Bool mask of times beyond :data:`MAX_FOLLOW_UP_DAYS` (``unit``: days, months as the
    caches store them (days / 30 + 1), or years); NaN is not beyond (checked apart)."""
    per_day = {"days": 1.0, "months": 1 / 30.0, "years": 1 / 365.25}[unit]
    limit = MAX_FOLLOW_UP_DAYS * per_day + (1.0 if unit == "months" else 0.0)
    with np.errstate(invalid="ignore"):
        return np.asarray(time, dtype=np.float64) > limit


def as_1d(x: Any, name: str, dtype: type = float) -> NDArray:
    """A NumPy 1-D copy of an array, list or tensor; (n, 1) is accepted as (n,)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if a.ndim == 2 and 1 in a.shape:
        a = a.ravel()
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {a.shape}")
    return a


def check_events(event: Any, where: str = "") -> NDArray:
    """Validate 0/1 events (for code that depends on events only); returns bool."""
    pre = f"{where}: " if where else ""
    e = as_1d(event, f"{pre}event")
    if np.isnan(e).any() or not np.isin(e, (0.0, 1.0)).all():
        bad = np.unique(e[~np.isin(e, (0.0, 1.0))])[:5].tolist()
        raise ValueError(f"{pre}event must hold only 0/1, found {bad}")
    return e.astype(bool)


def check_survival(time: Any, event: Any, risk: Any | None = None, *, where: str = "",
                   positive_time: bool = False, allow_empty: bool = False
                   ) -> tuple[NDArray, NDArray, NDArray | None]:
    """Validate and return ``(time float64, event bool, risk float64 or None)``.

    ``where`` prefixes every message (e.g. ``"test"`` or a file name) so the error says
    which data it is about.
    """
    pre = f"{where}: " if where else ""
    t = as_1d(time, f"{pre}time")
    e = as_1d(event, f"{pre}event")
    r = None if risk is None else as_1d(risk, f"{pre}risk")
    shapes = [t.shape, e.shape] + ([] if r is None else [r.shape])
    if len(set(shapes)) != 1:
        names = "time, event" + ("" if r is None else ", risk")
        raise ValueError(f"{pre}{names} lengths differ: {', '.join(str(s[0]) for s in shapes)}")
    if t.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{pre}survival data is empty")
    check_events(e, where)
    if not np.isfinite(t).all():
        raise ValueError(f"{pre}time has {int((~np.isfinite(t)).sum())} non-finite value(s) "
                         f"(at positions {np.flatnonzero(~np.isfinite(t))[:5].tolist()})")
    if positive_time and (t <= 0).any():
        raise ValueError(f"{pre}time must be strictly positive "
                         f"(at positions {np.flatnonzero(t <= 0)[:5].tolist()})")
    if r is not None and not np.isfinite(r).all():
        raise ValueError(f"{pre}risk has {int((~np.isfinite(r)).sum())} non-finite value(s)")
    return t, e.astype(bool), r
