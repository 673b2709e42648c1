"""The median-beat extraction as it was before the speed-up of issue 17 (commit be15a7d of
data_modules/signal/median_beat.py, verbatim below this docstring): kept so that
tests/test_median_beat_reference.py can pin the optimised extraction to it (bit-identical
beats, R peaks, detection lead and skip reasons) and benchmarks/bench_sources.py can time
old against new in one run. Not used by the package. Regenerate nothing: if the extraction
is meant to change, change this file in the same commit and say why.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import ndimage
from scipy import signal as sps
from scipy.ndimage import uniform_filter1d

from data_modules.signal.leads import BEAT_LEN, FS, LEADS, N_LEADS, R_INDEX

FLAT_PTP_MV = 0.01  # a lead whose peak-to-peak amplitude is below 10 uV carries no ECG
# Largest plausible |amplitude| of a median beat or a 10 s strip (docs/data_formats.md,
# "Plausible amplitudes"): the real PTB-XL sample stays below ~10 mV in strips and beats;
# a wrong gain/unit (WFDB gain 1, CardioSoft Resolution 5000) gives hundreds of mV.
MAX_ABS_MV = 20.0
MIN_BEATS = 3
MIN_FS = 50.0  # below this a QRS (~100 ms) is not resolved
ALIGN_MAX_LAG_S = 0.04
QRS_HALF_S = 0.06  # half width of the QRS region used for alignment
FIDUCIAL_SEARCH_S = 0.08  # the R peak is searched within +-80 ms of the aligned detections
FIDUCIAL_MARGIN_S = 0.12
# Median 12-lead QRS correlation of the beats with their median QRS: >= 0.97 on every real
# PTB-XL record of the sample, <= 0.72 on noise-only inputs.
MIN_QRS_CONSISTENCY = 0.8
OUTLIER_CORR = 0.8  # QRS correlation below which a beat is treated as ectopic/artefact
POWERLINE_HZ = 50.0  # PTB-XL (Germany) and UK Biobank (UK) mains frequency
LOWPASS_HZ = 100.0


class BeatExtractionError(ValueError):
    """A record from which no trustworthy median beat can be derived; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class MedianBeatResult:
    """Median beat (12, 600) float32 at 500 Hz, mV, R at ``R_INDEX``, and how it was made."""

    beat: np.ndarray
    n_beats: int
    r_peaks: np.ndarray  # fiducial (R) samples at 500 Hz of the beats that entered the median
    detection_lead: str
    consistency: float  # median correlation of the beats with the median (1 = identical)


@functools.lru_cache(maxsize=32)
def _butter(order: int, cutoff: float, btype: str, fs: float) -> np.ndarray:
    return sps.butter(order, cutoff, btype=btype, output="sos", fs=fs)


def _highpass(x: np.ndarray, fs: float, cutoff: float = 0.5) -> np.ndarray:
    return sps.sosfiltfilt(_butter(5, cutoff, "highpass", float(fs)), x, axis=-1)


def beat_filter(signal: np.ndarray, fs: float = FS, powerline: float = POWERLINE_HZ) -> np.ndarray:
    """Diagnostic-band filter applied before taking the median: 0.5 Hz high-pass (baseline
    wander), powerline notch, 100 Hz low-pass (muscle/white noise); all zero-phase.

    Unlike ``clean_ecg`` (whose powerline moving average is a ~15 Hz low-pass that blunts the
    QRS), this keeps the QRS morphology: on the synthetic template it changes the beat by
    < 1e-5 in correlation, while the notch and low-pass take most of the noise out.
    """
    y = _highpass(np.asarray(signal, dtype=np.float64), fs)
    if powerline < fs / 2:
        b, a = sps.iirnotch(powerline, 30.0, fs=fs)
        y = sps.filtfilt(b, a, y, axis=-1)
    if fs > 2 * LOWPASS_HZ:
        y = sps.sosfiltfilt(_butter(4, LOWPASS_HZ, "lowpass", float(fs)), y, axis=-1)
    return y


def clean_ecg(signal: np.ndarray, fs: float, powerline: float = POWERLINE_HZ) -> np.ndarray:
    """Per-lead 0.5 Hz high-pass + powerline removal, identical to neurokit2's "neurokit" clean.

    Vectorised over leads (neurokit2 works on one lead at a time). Accepts (T,) or (L, T).
    """
    x = np.asarray(signal, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("clean_ecg: signal contains NaN or inf")
    y = _highpass(x, fs)
    n = int(fs / powerline) if fs >= 100 else 2
    return sps.filtfilt(np.ones(n), [n], y, axis=-1, method="pad")


def signal_problem(x: np.ndarray, max_abs_mv: float = MAX_ABS_MV) -> str | None:
    """The one plausibility rule for every stored ECG (PTB-XL strips and beats, PTB-XL+ and
    UK Biobank device medians, UK Biobank strips): ``None`` when ``x`` (12, T) in mV is
    usable, else the reason, which starts with its category (``NaN/inf samples``,
    ``flat lead(s)``, ``implausible amplitude``).

    Order: non-finite samples, flat leads (peak-to-peak < ``FLAT_PTP_MV``), then any
    |sample| > ``max_abs_mv`` (wrong gain or unit).
    """
    x = np.asarray(x)
    bad = ~np.isfinite(x)
    if bad.any():
        leads = [LEADS[i] for i in np.flatnonzero(bad.reshape(x.shape[0], -1).any(axis=1))]
        return f"NaN/inf samples in lead(s) {','.join(leads)}"
    flat = np.ptp(x, axis=-1) < FLAT_PTP_MV
    if flat.any():
        return f"flat lead(s) {','.join(LEADS[i] for i in np.flatnonzero(flat))}"
    peak = np.abs(x).max(axis=-1)
    if (peak > max_abs_mv).any():
        i = int(np.argmax(peak))
        return (f"implausible amplitude: |x| reaches {float(peak[i]):.4g} mV in lead "
                f"{LEADS[i]} (plausible: <= {max_abs_mv:g} mV; wrong gain or unit?)")
    return None


def _validate(signal: np.ndarray, fs: float) -> np.ndarray:
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != N_LEADS:
        raise BeatExtractionError(f"expected shape (12, T), got {tuple(x.shape)}")
    if not np.isfinite(fs) or fs < MIN_FS:
        raise BeatExtractionError(f"unsupported sampling rate {fs} Hz (need >= {MIN_FS:g})")
    if x.shape[1] < 2 * fs:
        raise BeatExtractionError(f"record too short: {x.shape[1]} samples at {fs:g} Hz")
    problem = signal_problem(x, max_abs_mv=np.inf)  # amplitude: checked by the builders
    if problem is not None:
        raise BeatExtractionError(problem)
    return x


def resample_to(signal: np.ndarray, fs: float, target: float = FS) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased, exact rational ratio)."""
    if fs == target:
        return np.asarray(signal, dtype=np.float64)
    ratio = Fraction(float(target) / float(fs)).limit_denominator(1000)
    return sps.resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)


def _peaks_one_lead(clean: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk  # lazy: importing neurokit2 costs seconds

    try:
        info = nk.ecg_findpeaks(clean, sampling_rate=int(round(fs)), method="neurokit")
    except Exception:  # noqa: BLE001 - a detector failure on one lead only disqualifies that lead
        return np.zeros(0, dtype=np.int64)
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def _consistency(x: np.ndarray, peaks: np.ndarray, half: int) -> float:
    """Median correlation of each QRS window of one lead with the median QRS window."""
    peaks = peaks[(peaks >= half) & (peaks + half < x.shape[-1])]
    if len(peaks) < 2:
        return 0.0
    w = np.stack([x[p - half:p + half] for p in peaks])
    t = np.median(w, axis=0)
    w = w - w.mean(axis=1, keepdims=True)
    t = t - t.mean()
    den = np.linalg.norm(w, axis=1) * np.linalg.norm(t) + 1e-12
    return float(np.median(w @ t / den))


def _detect(clean: np.ndarray, fs: float) -> tuple[np.ndarray, int]:
    """QRS detections on the best lead of a cleaned (12, T) signal, and that lead's index."""
    duration = clean.shape[-1] / fs
    per_lead = [_peaks_one_lead(clean[i], fs) for i in range(clean.shape[0])]
    tol = int(round(0.08 * fs))
    half = int(round(QRS_HALF_S * fs))
    n_leads, n = len(per_lead), clean.shape[-1]
    # cover[j, t]: lead j has a detection within +-tol of sample t
    cover = np.zeros((n_leads, n + 1), dtype=np.int32)
    for j, p in enumerate(per_lead):
        np.add.at(cover[j], np.clip(p - tol, 0, n), 1)
        np.add.at(cover[j], np.clip(p + tol + 1, 0, n), -1)
    cover = np.cumsum(cover, axis=1)[:, :n] > 0
    # frac[i, j]: fraction of lead i's detections confirmed by lead j
    frac = np.array([[cover[j, p].mean() if len(p) else 0.0 for j in range(n_leads)]
                     for p in per_lead])
    scores = np.zeros(n_leads)
    for i, p in enumerate(per_lead):
        rate = 60.0 * len(p) / duration
        if len(p) < 2 or not 20.0 <= rate <= 250.0:
            continue
        # Agreement in both directions penalises both missed beats and extra detections.
        agree = np.minimum(frac[i], frac[:, i])
        agree = (agree.sum() - agree[i]) / (n_leads - 1)
        scores[i] = float(agree) * max(_consistency(clean[i], p, half), 0.0)
    best = int(np.argmax(scores))
    if scores[best] <= 0:
        return np.zeros(0, dtype=np.int64), best
    return per_lead[best], best


def detect_r_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices (at ``fs``) of a (12, T) record, from the most reliable lead."""
    x = _validate(signal, fs)
    return _detect(clean_ecg(x, fs), fs)[0]


def _windows(x: np.ndarray, centers: np.ndarray, before: int, after: int) -> np.ndarray:
    idx = centers[:, None] + np.arange(-before, after)[None, :]
    return np.transpose(x[:, idx], (1, 0, 2))  # (B, 12, before+after)


def _align(x: np.ndarray, peaks: np.ndarray, fs: float, n_iter: int = 2) -> np.ndarray:
    """Shift each detection so its 12-lead QRS best matches the median QRS (cross-correlation)."""
    max_lag = int(round(ALIGN_MAX_LAG_S * fs))
    half = int(round(QRS_HALF_S * fs))
    span = half + max_lag
    peaks = peaks[(peaks >= span) & (peaks + span < x.shape[-1])]
    if len(peaks) < 2:
        return peaks
    lags = np.arange(-max_lag, max_lag + 1)
    for _ in range(n_iter):
        wide = _windows(x, peaks, span, span + 1)  # (B, 12, 2*span+1)
        tmpl = np.median(wide[:, :, max_lag:max_lag + 2 * half + 1], axis=0)  # (12, 2*half+1)
        # score[b, k] = sum over leads and samples of window shifted by lags[k] times template
        score = np.stack([
            np.einsum("blt,lt->b", wide[:, :, max_lag + k:max_lag + k + 2 * half + 1], tmpl)
            for k in lags
        ], axis=1)
        shift = lags[np.argmax(score, axis=1)]
        if not shift.any():
            break
        peaks = peaks + shift
        peaks = peaks[(peaks >= span) & (peaks + span < x.shape[-1])]
        if len(peaks) < 2:
            break
    return peaks


def _isoelectric(beat: np.ndarray, r_index: int, fs: float) -> np.ndarray:
    """Per-lead isoelectric level, so the beat's baseline sits at 0 mV like a device median.

    Walking back from R, the QRS onset is where the 12-lead slope (10 ms smoothed) has
    stayed below 8 % of its QRS maximum for 16 ms (a brief dip inside a notched QRS does
    not count); the level is the mean of the 20 ms before that point: the PR segment, or
    the TP segment when P and QRS merge. (Taking the "flattest" pre-QRS window instead
    mistakes the top of a broad P wave for the baseline.)
    """
    k = max(int(0.01 * fs), 1)
    v = uniform_filter1d(np.abs(np.diff(beat, axis=1)).sum(axis=0), k)
    s = int(0.06 * fs)
    thr = 0.08 * v[max(r_index - s, 0):r_index + s].max()
    hold = int(0.016 * fs)
    w = int(0.02 * fs)
    lo = max(r_index - int(0.35 * fs), w)
    quiet = 0
    end = lo
    for i in range(min(r_index, len(v) - 1), lo, -1):
        quiet = quiet + 1 if v[i] < thr else 0
        if quiet >= hold:
            end = i + hold
            break
    return beat[:, end - w:end].mean(axis=1, keepdims=True)


def _fiducial(template: np.ndarray, center: int, fs: float) -> float:
    """Sub-sample R position in a (12, W) template near ``center``.

    The 12-lead energy sum_l (x_l - iso_l)^2 is split into lobes (runs above 20 % of its
    maximum within +-80 ms of ``center``). R := the energy-weighted centre of the earliest
    lobe reaching half the maximum. So a single dominant deflection gives its peak; a notched
    (M-shaped) R as in LBBB, whose notch stays above 20 %, gives a point between the notches
    rather than whichever notch is taller; a terminal R' (RBBB) or deep S that outweighs the
    R does not capture the fiducial. Independent of the detection lead and of polarity.
    """
    iso = _isoelectric(template, center, fs)
    e = uniform_filter1d(((template - iso) ** 2).sum(axis=0), 3)
    s = int(round(FIDUCIAL_SEARCH_S * fs))
    lo, hi = max(center - s, 0), min(center + s + 1, len(e))
    gmax = float(e[lo:hi].max())
    if gmax <= 0:
        return float(center)
    above = np.concatenate([[False], e >= 0.2 * gmax, [False]])
    starts = np.flatnonzero(~above[:-1] & above[1:])
    ends = np.flatnonzero(above[:-1] & ~above[1:])  # exclusive
    lim = int(round(0.06 * fs))
    for a, b in zip(starts, ends):
        peak = a + int(np.argmax(e[a:b]))
        if e[peak] < 0.5 * gmax or not lo <= peak < hi:
            continue
        a, b = max(a, peak - lim), min(b, peak + lim + 1)
        w = e[a:b]
        return float((w * np.arange(a, b)).sum() / w.sum())
    return float(lo + int(np.argmax(e[lo:hi])))


def shift_to_r(x: np.ndarray, r: float) -> np.ndarray:
    """(12, W) -> (12, 600) window with position ``r`` (sub-sample) moved to ``R_INDEX``.

    Cubic-spline interpolation for the fractional part; samples outside ``x`` repeat the
    edge values.
    """
    start = r - R_INDEX
    i0 = int(np.floor(start))
    frac = start - i0
    pad = BEAT_LEN + 4
    xp = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (pad, pad)), mode="edge")
    seg = xp[:, i0 + pad - 2:i0 + pad + BEAT_LEN + 3]
    if frac > 1e-6:
        seg = ndimage.shift(seg, (0, -frac), order=3, mode="nearest")
    return seg[:, 2:2 + BEAT_LEN]


def _nanmedian0(a: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (np.nanmedian is ~10x slower: masked arrays)."""
    s = np.sort(a, axis=0)  # NaN sorts last
    n = np.isfinite(a).sum(axis=0)
    lo = np.maximum((n - 1) // 2, 0)[None]
    hi = np.maximum(n // 2, 0)[None]
    med = 0.5 * (np.take_along_axis(s, lo, 0) + np.take_along_axis(s, hi, 0))[0]
    return np.where(n > 0, med, np.nan)


def _corr_with(windows: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson correlation of each (12, W) window (flattened) with a (12, W) template."""
    b = windows.reshape(len(windows), -1)
    b = b - b.mean(axis=1, keepdims=True)
    t = template.ravel() - template.mean()
    return b @ t / (np.linalg.norm(b, axis=1) * np.linalg.norm(t) + 1e-12)


def _drop_outlier_beats(x: np.ndarray, peaks: np.ndarray,
                        min_beats: int) -> tuple[np.ndarray, float]:
    """Drop beats whose 12-lead QRS differs from the dominant one (ectopic beats, artefacts);
    returns the kept beats and their median QRS correlation with the median QRS.

    The median already resists a minority of outliers; removing them sharpens it. If fewer
    than half the beats (or fewer than ``min_beats``) would remain, the rhythm has no clear
    dominant beat and all beats are kept (the consistency gate then decides).
    """
    half = int(round(QRS_HALF_S * FS))
    w = _windows(x, peaks, half, half + 1)
    c = _corr_with(w, np.median(w, axis=0))
    good = c >= OUTLIER_CORR
    if good.sum() >= max(min_beats, len(peaks) / 2):
        return peaks[good], float(np.median(c[good]))
    return peaks, float(np.median(c))


def median_beat(signal: np.ndarray, fs: float, min_beats: int = MIN_BEATS,
                powerline: float = POWERLINE_HZ) -> MedianBeatResult:
    """Median beat of a (12, T) mV record: (12, 600) at 500 Hz with R at ``R_INDEX``.

    Raises :class:`BeatExtractionError` (with the reason) for NaN, flat leads, an unusable
    sampling rate, or fewer than ``min_beats`` complete beats.
    """
    x = _validate(signal, fs)
    x = resample_to(x, fs, FS)
    peaks, det_lead = _detect(clean_ecg(x, FS, powerline), FS)
    filt = beat_filter(x, FS, powerline)
    if len(peaks) == 0:
        raise BeatExtractionError("no beats detected")
    peaks = _align(filt, np.asarray(peaks), FS)
    if len(peaks) < min_beats:
        raise BeatExtractionError(f"too few beats: {len(peaks)} < {min_beats}")
    peaks, qrs_consistency = _drop_outlier_beats(filt, peaks, min_beats)
    if qrs_consistency < MIN_QRS_CONSISTENCY:
        raise BeatExtractionError(
            f"no consistent QRS complexes (median QRS correlation {qrs_consistency:.2f} < "
            f"{MIN_QRS_CONSISTENCY}): noise or artefact")
    margin = int(round(FIDUCIAL_MARGIN_S * FS))
    before, after = R_INDEX + margin, BEAT_LEN - R_INDEX + margin
    # NaN padding keeps the beats whose window runs off the strip (their in-strip part counts).
    padded = np.pad(filt, ((0, 0), (before, after)), constant_values=np.nan)
    wide = _windows(padded, peaks + before, before, after)
    cover_wide = np.isfinite(wide[:, 0, :]).sum(axis=0)
    tmpl = _nanmedian0(wide)
    fid = float(np.clip(_fiducial(np.nan_to_num(tmpl), before, FS),
                        before - margin + 3, before + margin - 3))
    first = int(np.floor(fid)) - R_INDEX
    cover = cover_wide[max(first - 2, 0):first + BEAT_LEN + 3]
    if cover.min() < min_beats:
        raise BeatExtractionError(
            f"too few beats cover the window: {int(cover.min())} < {min_beats}")
    beat = shift_to_r(tmpl, fid)
    iso = _isoelectric(beat, R_INDEX, FS)
    beat = beat - iso
    offset = int(round(fid)) - before
    full = wide[np.isfinite(wide).all(axis=(1, 2))]
    full = full[:, :, margin + offset:margin + offset + BEAT_LEN]
    return MedianBeatResult(
        beat=beat.astype(np.float32),
        n_beats=len(wide),
        r_peaks=(peaks + offset).astype(np.int64),
        detection_lead=LEADS[det_lead],
        consistency=float(np.median(_corr_with(full - iso, beat))) if len(full) else float("nan"),
    )


def conform_beat(beat: np.ndarray, fs: float) -> np.ndarray:
    """A (12, W) median beat at ``fs`` -> (12, 600) at 500 Hz with its R peak at R_INDEX.

    Used for beats made elsewhere (UK Biobank device medians, PTB-XL+ 12SL medians), which
    put the beat at their own fiducial: re-centring them with the same R rule as derived
    medians keeps R at the same sample in every dataset (pretraining -> finetuning). The QRS
    is located as the maximum of the 12-lead absolute slope (20 ms smoothed, searched from
    210 ms into the beat); the beat is then shifted with sub-sample precision (samples
    shifted in from outside repeat the edge value).
    """
    x = resample_to(np.asarray(beat, dtype=np.float64), fs, FS)
    w = x.shape[1]
    s = int(round(FIDUCIAL_SEARCH_S * FS))
    lo, hi = int(0.21 * FS), w - s - 1  # room for the PR-segment and R searches
    if hi <= lo:
        raise ValueError(f"median beat too short: {w} samples at 500 Hz")
    slope = np.abs(np.diff(x, axis=1)).sum(axis=0)
    k = int(0.02 * FS)
    slope = np.convolve(slope, np.ones(k) / k, mode="same")
    center = lo + int(np.argmax(slope[lo:hi]))
    return shift_to_r(x, _fiducial(x, center, FS))
