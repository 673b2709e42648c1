"""Switch between ecg-dan's fast CPU kernels and the reference's plain PyTorch path.

The fast path (default) changes no parameter and no result beyond float rounding; the
reference path exists so benchmarks can time the original computation on the same
weights, and so tests can compare the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_FAST = True


def fast_kernels() -> bool:
    return _FAST


@contextmanager
def reference_kernels() -> Iterator[None]:
    """Within this block: native batch norm and convolutions in NCHW/NCW layout."""
    global _FAST
    previous, _FAST = _FAST, False
    try:
        yield
    finally:
        _FAST = previous
