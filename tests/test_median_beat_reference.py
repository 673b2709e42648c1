"""The optimised median-beat extraction gives what the original gave, bit for bit
(tests/reference/median_beat_reference.py keeps the original): beats, R peaks, detection
lead, beat count, consistency and skip reasons, on synthetic and real records."""

from __future__ import annotations

import numpy as np
import pytest

from data_modules.signal import median_beat as new
from data_modules.sources.wfdb_record import read_wfdb_12lead
from data_modules.synthetic.beat_model import simulate_record
from tests.reference import median_beat_reference as old

FS = 500.0


def _outcome(mod, x: np.ndarray, fs: float):
    try:
        r = mod.median_beat(x, fs)
    except mod.BeatExtractionError as e:
        return e.reason
    return r.beat, r.r_peaks, r.detection_lead, r.n_beats, r.consistency


def assert_same(x: np.ndarray, fs: float = FS) -> None:
    a, b = _outcome(old, x, fs), _outcome(new, x, fs)
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert np.array_equal(a[0], b[0])  # the beat, bit for bit
    assert np.array_equal(a[1], b[1])
    assert a[2:] == b[2:]


@pytest.mark.parametrize("label,seed", [("NORM", 0), ("CLBBB", 1), ("IMI+1AVB", 2),
                                        ("AFIB", 3), ("LVH", 4)])
def test_synthetic_records(label: str, seed: int) -> None:
    rec = simulate_record(np.random.default_rng(seed), label, extra_beat=seed == 0)
    assert_same(rec.signal)


def test_other_rate_and_bad_input() -> None:
    rng = np.random.default_rng(5)
    x = simulate_record(rng, "NORM", fs=250).signal
    assert_same(x, 250.0)
    assert_same(np.asfortranarray(simulate_record(rng, "NORM").signal))  # as a WFDB strip
    assert_same(rng.normal(0, 0.1, (12, 5000)))  # noise: no consistent QRS
    flat = simulate_record(rng, "NORM").signal
    flat[3] = 0.0
    assert_same(flat)
    nan = simulate_record(rng, "NORM").signal
    nan[7, 100] = np.nan
    assert_same(nan)
    assert_same(flat[:, :800])  # too short


@pytest.mark.parametrize("x", [
    np.zeros((12, 50)), np.full((12, 50), np.inf), np.r_[np.ones((11, 50)), -np.ones((1, 50))],
    np.outer(np.arange(12) - 30.0, np.sin(np.arange(50))),
])
def test_signal_problem(x: np.ndarray) -> None:
    x = x.copy()
    x[0, 0] = -x[0, 0] - 1e-3
    if np.isfinite(x).all():
        x[5, 5] = np.nan
        assert new.signal_problem(x[:5]) == old.signal_problem(x[:5])
    assert new.signal_problem(x) == old.signal_problem(x)


def test_filters_and_detector() -> None:
    x = simulate_record(np.random.default_rng(6), "NORM").signal
    assert np.array_equal(new.clean_ecg(x, FS), old.clean_ecg(x, FS))
    assert np.array_equal(new.clean_ecg(x[2], FS), old.clean_ecg(x[2], FS))
    assert np.array_equal(new.beat_filter(x, FS), old.beat_filter(x, FS))
    clean = new.clean_ecg(x, FS)
    for lead, peaks in enumerate(new._neurokit_peaks(clean, FS)):
        assert np.array_equal(peaks, old._peaks_one_lead(clean[lead], FS))


def test_real_ptbxl_records(ptbxl_dir) -> None:
    for stem in sorted((ptbxl_dir / "records500").glob("*/*.hea"))[:4]:
        x, fs = read_wfdb_12lead(stem.with_suffix(""), stem.name)
        assert_same(x, fs)
