"""Physiological 12-lead beat model: a cardiac dipole built from Gaussian waves.

The heart is a single current dipole d(t) in R^3 (x: patient's left, y: inferior, z: anterior).
As in McSharry et al. (IEEE TBME 2003) each wave (P, Q, R, S, T ...) is a Gaussian bump in time;
here each bump carries a 3-D vector, so the beat is a spatial loop and every lead is a projection
of the same dipole. Only I, II and V1-V6 are projected (and only they get noise); III, aVR, aVL and
aVF are *derived* from I and II with Einthoven's and Goldberger's equations, so the lead identities
hold exactly, noise included, as they do for real electrodes.

Class-dependent morphology is produced by editing the wave set (`apply_condition`), and the ECG
features that drive the synthetic hazard are read either from the generating parameters
(intervals, axes) or from the clean template beat (voltages, ST level, T inversion).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from data_modules.signal.leads import BEAT_LEN, FS, LEADS, R_INDEX

# Wave slots; a wave that a morphology does not use has a zero vector.
WAVES: tuple[str, ...] = ("P", "Q", "R1", "R2", "S", "Rp", "ST", "T0", "T")
W = {name: i for i, name in enumerate(WAVES)}
QRS_WAVES = ("Q", "R1", "R2", "S", "Rp")
REPOL_WAVES = ("ST", "T0", "T")  # stretch with the preceding RR (QT adapts to heart rate)
_TAIL = 2.5  # a Gaussian wave is taken to span centre +- 2.5 sigma (about 4 % of its peak)

LABELS: tuple[str, ...] = ("NORM", "IMI", "AMI", "LVH", "CLBBB", "CRBBB", "AFIB", "1AVB", "STTC")
# Pairs that must not be combined (contradicting morphologies).
_INCOMPATIBLE = {frozenset({"CLBBB", "CRBBB"}), frozenset({"AFIB", "1AVB"})}

# Independent leads (the ones projected from the dipole); the other four are derived.
INDEPENDENT: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


assert tuple(LEADS) == ("I", "II", "III", "aVR", "aVL", "aVF",
                        "V1", "V2", "V3", "V4", "V5", "V6")


INDEPENDENT_INDEX: tuple[int, ...] = tuple(LEADS.index(n) for n in INDEPENDENT)


def expand_leads(independent: np.ndarray) -> np.ndarray:
    """(8, T) array of I, II, V1..V6 -> (12, T) in the standard lead order."""
    out = np.empty((12, independent.shape[-1]), dtype=independent.dtype)
    i, ii = independent[0], independent[1]
    out[0], out[1] = i, ii
    out[2] = ii - i
    out[3] = -(i + ii) / 2
    out[4] = i - ii / 2
    out[5] = ii - i / 2
    out[6:] = independent[2:]
    return out


def _rot(axis: int, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def base_lead_vectors() -> np.ndarray:
    """Lead vectors (8 x 3) of I, II, V1..V6 for an average torso.

    Limb leads lie in the frontal plane (I at 0 deg, II at +60 deg, y pointing down); precordial
    leads lie roughly in the horizontal plane, from V1 (right-anterior, ~115 deg from the
    patient's left towards anterior) to V6 (left-lateral, ~0 deg), with the larger gains of
    electrodes close to the heart.
    """
    angles = np.deg2rad([115.0, 95.0, 75.0, 55.0, 30.0, 5.0])
    gains = np.array([1.05, 1.45, 1.5, 1.4, 1.2, 1.0])
    m = np.zeros((8, 3))
    m[0] = (1.0, 0.0, 0.0)
    m[1] = (np.cos(np.pi / 3), np.sin(np.pi / 3), 0.0)
    m[2:, 0] = gains * np.cos(angles)
    m[2:, 1] = 0.08 * gains
    m[2:, 2] = gains * np.sin(angles)
    return m


@dataclass
class BeatParams:
    """Everything that defines one subject's beat and rhythm (times in seconds, R at t = 0)."""

    centers: np.ndarray  # (W,) wave centres at the mean RR
    widths: np.ndarray  # (W,) Gaussian sigmas
    vectors: np.ndarray  # (W, 3) dipole amplitude of each wave, mV
    lead_matrix: np.ndarray  # (8, 3) subject-specific projection onto I, II, V1..V6
    rr: float  # mean RR interval, s
    rr_cv: float  # beat-to-beat RR variability (coefficient of variation)
    af: bool
    conditions: tuple[str, ...]
    q_path: float = 0.0  # depth-like size of pathological Q waves (0 = none), mV
    extras: dict = field(default_factory=dict)

    # ---- intervals read from the generating parameters -------------------------------------
    def _active(self, names: Sequence[str]) -> np.ndarray:
        idx = np.array([W[n] for n in names])
        return idx[np.linalg.norm(self.vectors[idx], axis=1) > 0.02]

    @property
    def qrs_on(self) -> float:
        idx = self._active(QRS_WAVES)
        return float(np.min(self.centers[idx] - _TAIL * self.widths[idx]))

    @property
    def qrs_off(self) -> float:
        idx = self._active(QRS_WAVES)
        return float(np.max(self.centers[idx] + _TAIL * self.widths[idx]))

    @property
    def p_on(self) -> float:
        return float(self.centers[W["P"]] - _TAIL * self.widths[W["P"]])

    @property
    def t_end(self) -> float:
        idx = np.array([W["T0"], W["T"]])
        return float(np.max(self.centers[idx] + _TAIL * self.widths[idx]))


# ---------------------------------------------------------------------------------------------
# Sampling a subject
# ---------------------------------------------------------------------------------------------

def parse_conditions(label: str | Sequence[str]) -> tuple[str, ...]:
    """'IMI+1AVB' or ['IMI', '1AVB'] -> ('IMI', '1AVB'), validated against LABELS."""
    parts = label.split("+") if isinstance(label, str) else list(label)
    conds = tuple(dict.fromkeys(p.strip().upper() for p in parts if p.strip()))
    conds = tuple("NORM" if c == "NORMAL" else c for c in conds)
    for c in conds:
        if c not in LABELS:
            raise ValueError(f"unknown synthetic label {c!r}; expected one of {LABELS}")
    if not conds:
        raise ValueError("empty label")
    if len(conds) > 1 and "NORM" in conds:
        raise ValueError("NORM cannot be combined with another label")
    for a in conds:
        for b in conds:
            if frozenset({a, b}) in _INCOMPATIBLE:
                raise ValueError(f"labels {a} and {b} cannot be combined")
    return conds


def _clip_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def sample_beat_params(rng: np.random.Generator, label: str | Sequence[str] = "NORM",
                       age: float | None = None, female: bool | None = None,
                       hr: float | None = None, severity: float = 1.0) -> BeatParams:
    """Draw a subject: normal physiology with random variation, then the label's morphology.

    ``severity`` in (0, 1] scales how far the label's edits move the waves away from this
    subject's normal beat (1: the full textbook pattern; the hard twin draws it per subject,
    so classes overlap and risk features vary continuously). It uses no random draws, so the
    subject is otherwise the same."""
    conds = parse_conditions(label)
    age = float(age) if age is not None else float(rng.uniform(30, 80))
    female = bool(rng.random() < 0.5) if female is None else bool(female)
    af = "AFIB" in conds

    if hr is None:
        hr = _clip_normal(rng, 84 if af else 68, 14 if af else 10, 42, 125)
    rr = 60.0 / hr
    qrs = _clip_normal(rng, 88 if female else 94, 7, 74, 106) / 1000
    pr = _clip_normal(rng, 155 + 0.3 * (age - 50), 18, 122, 196) / 1000
    p_dur = _clip_normal(rng, 98, 9, 78, 116) / 1000
    qtc = _clip_normal(rng, 420 if female else 408, 16, 370, 455) / 1000
    qt = qtc * np.sqrt(rr)

    # voltage falls with age and is lower in women; T amplitude varies independently
    v = float(rng.lognormal(0.0, 0.18)) * (0.9 if female else 1.0) * (1.1 - 0.004 * (age - 50))
    tg = float(rng.lognormal(0.0, 0.22))

    on = -0.5 * qrs
    c = np.zeros(len(WAVES))
    s = np.zeros(len(WAVES))
    vec = np.zeros((len(WAVES), 3))

    c[W["P"]], s[W["P"]] = on - pr + p_dur / 2, p_dur / (2 * _TAIL)
    vec[W["P"]] = np.array([0.085, 0.115, 0.03]) * rng.lognormal(0, 0.15)
    c[W["Q"]], s[W["Q"]] = -0.30 * qrs, 0.08 * qrs
    vec[W["Q"]] = np.array([-0.16, -0.06, 0.22]) * v
    c[W["R1"]], s[W["R1"]] = -0.12 * qrs, 0.085 * qrs
    vec[W["R1"]] = np.array([0.45, 0.40, 0.42]) * v
    c[W["R2"]], s[W["R2"]] = 0.0, 0.085 * qrs
    vec[W["R2"]] = np.array([1.0, 0.75, -0.62]) * v
    c[W["S"]], s[W["S"]] = 0.30 * qrs, 0.08 * qrs
    vec[W["S"]] = np.array([-0.22, -0.25, -0.30]) * v
    c[W["Rp"]], s[W["Rp"]] = 0.3 * qrs, 0.06 * qrs  # unused unless RBBB
    # repolarisation: ST plateau, slow T upstroke (T0) and T peak; T ends at QRS onset + QT
    s_t = 0.16 * (qt - qrs)
    t_end = on + qt
    c[W["T"]], s[W["T"]] = t_end - _TAIL * s_t, s_t
    c[W["T0"]], s[W["T0"]] = c[W["T"]] - 1.3 * s_t, 1.2 * s_t
    c[W["ST"]], s[W["ST"]] = -on + 0.07, 0.035
    t_vec = np.array([0.26, 0.19, 0.24]) * tg
    vec[W["T"]] = t_vec
    vec[W["T0"]] = 0.3 * t_vec
    vec[W["ST"]] = rng.normal(0, 0.01, 3)

    # subject geometry: heart orientation (frontal axis, transition zone) and electrode gains
    rot = _rot(2, rng.normal(0, 14)) @ _rot(1, rng.normal(0, 8))
    lead = base_lead_vectors()
    lead[2:] *= rng.lognormal(0, 0.08, (6, 1))

    rr_cv = float(rng.uniform(0.01, 0.05))
    p = BeatParams(centers=c, widths=s, vectors=vec, lead_matrix=lead @ rot, rr=rr,
                   rr_cv=rr_cv, af=af, conditions=conds)
    p.extras.update(age=age, female=female, qrs_nominal=qrs, qt_nominal=qt)
    off0 = p.qrs_off
    p.extras["pr"] = p.qrs_on - p.p_on
    normal = (c.copy(), s.copy(), vec.copy(), p.lead_matrix.copy(), p.extras["pr"], p.rr_cv)
    for cond in conds:
        apply_condition(p, cond, rng)
    if severity != 1.0:
        _soften(p, normal, severity)
    _shift_repolarisation(p, max(0.0, p.qrs_off - off0))  # a wider QRS delays repolarisation
    c[W["P"]] += (p.qrs_on - p.extras["pr"]) - p.p_on  # keep the PR interval (set by 1AVB)
    return p


def _soften(p: BeatParams, normal: tuple, severity: float) -> None:
    """Move the label's wave edits back towards the subject's normal beat (``severity``)."""
    if not 0.0 < severity <= 1.0:
        raise ValueError(f"severity must be in (0, 1], got {severity}")
    c0, s0, v0, lead0, pr0, rr_cv0 = normal
    k = severity
    p.centers[:] = c0 + k * (p.centers - c0)
    p.widths[:] = s0 + k * (p.widths - s0)
    p.vectors[:] = v0 + k * (p.vectors - v0)
    p.lead_matrix = lead0 + k * (p.lead_matrix - lead0)
    p.extras["pr"] = pr0 + k * (p.extras["pr"] - pr0)
    p.q_path *= k
    if p.af:  # AF is a rhythm, not a graded morphology: no P wave, still irregular
        p.vectors[W["P"]] = 0.0
        p.rr_cv = max(rr_cv0 + k * (p.rr_cv - rr_cv0), 0.10)
        p.extras["f_amp"] *= k


def apply_condition(p: BeatParams, cond: str, rng: np.random.Generator) -> None:
    """Edit the wave set in place to produce the morphology of one label."""
    c, s, vec = p.centers, p.widths, p.vectors
    if cond == "NORM":
        return
    if cond == "AFIB":
        vec[W["P"]] = 0.0
        p.af = True
        p.rr_cv = float(rng.uniform(0.12, 0.28))
        p.extras["f_amp"] = float(rng.uniform(0.03, 0.09))
        p.extras["f_hz"] = float(rng.uniform(5.0, 8.0))
    elif cond == "1AVB":
        p.extras["pr"] = float(rng.uniform(0.225, 0.32))
    elif cond == "LVH":
        k = rng.uniform(1.55, 2.1)
        for w in ("R1", "R2", "S"):
            vec[W[w]] *= k
        # more leftward-posterior forces: deep S in V1-V2, tall R in V5-V6
        vec[W["R2"]] += np.array([0.2, -0.1, -0.35]) * k
        for w in QRS_WAVES:
            s[W[w]] *= 1.08
            c[W[w]] *= 1.08
        if rng.random() < 0.45:  # strain pattern: lateral ST depression + T inversion
            vec[W["ST"]] = np.array([-0.07, -0.02, 0.03])
            vec[W["T"]] = np.array([-0.18, 0.02, 0.12]) * rng.uniform(0.8, 1.3)
            vec[W["T0"]] = 0.3 * vec[W["T"]]
            p.extras["strain"] = True
    elif cond == "CLBBB":
        d = rng.uniform(0.138, 0.175)
        # no septal q (septum activated right-to-left), slow broad notched leftward-posterior R
        vec[W["Q"]] = np.array([0.12, 0.0, -0.05]) * 1.0
        c[W["Q"]], s[W["Q"]] = -0.375 * d, 0.05 * d
        c[W["R1"]], s[W["R1"]] = -0.175 * d, 0.11 * d
        c[W["R2"]], s[W["R2"]] = 0.16 * d, 0.12 * d
        vec[W["R1"]] = np.array([0.95, 0.25, -0.75]) * rng.uniform(0.9, 1.25)
        vec[W["R2"]] = np.array([1.05, 0.15, -0.95]) * rng.uniform(0.9, 1.25)
        vec[W["S"]] = 0.0
        vec[W["Rp"]] = 0.0
        # secondary (discordant) repolarisation
        vec[W["ST"]] = np.array([-0.10, -0.02, 0.16])
        vec[W["T"]] = np.array([-0.30, -0.05, 0.30]) * rng.uniform(0.8, 1.2)
        vec[W["T0"]] = 0.3 * vec[W["T"]]
        p.lead_matrix = p.lead_matrix @ _rot(2, -rng.uniform(5, 45))  # often left axis
    elif cond == "CRBBB":
        d = rng.uniform(0.132, 0.165)
        # normal initial forces, then a slow terminal rightward-anterior wave (R' in V1)
        c[W["Rp"]], s[W["Rp"]] = p.qrs_on + d - _TAIL * 0.12 * d, 0.12 * d
        vec[W["Rp"]] = np.array([-0.4, -0.05, 0.75]) * rng.uniform(0.8, 1.2)
        vec[W["S"]] *= 0.5
        vec[W["ST"]] = np.array([0.02, 0.0, -0.06])
        vec[W["T"]] = np.array([0.22, 0.18, -0.18]) * rng.uniform(0.8, 1.2)
        vec[W["T0"]] = 0.3 * vec[W["T"]]
    elif cond == "IMI":
        # inferior scar: initial forces point superior (Q in II, III, aVF), inferior R reduced
        depth = rng.uniform(0.45, 0.8)
        c[W["Q"]], s[W["Q"]] = p.qrs_on + _TAIL * 0.012 + 0.002, 0.012
        vec[W["Q"]] = np.array([0.05, -depth, 0.05])
        vec[W["R1"], 1] *= 0.2
        vec[W["R2"], 1] *= 0.45
        vec[W["T"]] = np.array([0.22, -0.16, 0.2]) * rng.uniform(0.7, 1.2)
        vec[W["T0"]] = 0.3 * vec[W["T"]]
        if rng.random() < 0.25:  # recent infarct: residual ST elevation inferiorly
            vec[W["ST"]] = np.array([-0.02, 0.12, 0.0])
        p.q_path = max(p.q_path, depth)
    elif cond == "AMI":
        # anteroseptal scar: loss of anterior forces, QS in V1-V3/V4, anterior T inversion
        depth = rng.uniform(0.35, 0.7)
        c[W["Q"]], s[W["Q"]] = p.qrs_on + _TAIL * 0.013 + 0.002, 0.013
        vec[W["Q"]] = np.array([0.1, 0.05, -depth])
        vec[W["R1"], 2] = -0.25 * abs(vec[W["R1"], 0])
        vec[W["R2"], 2] -= 0.2
        vec[W["T"]] = np.array([0.22, 0.2, -0.26]) * rng.uniform(0.7, 1.2)
        vec[W["T0"]] = 0.3 * vec[W["T"]]
        if rng.random() < 0.25:
            vec[W["ST"]] = np.array([0.0, 0.0, 0.14])
        p.q_path = max(p.q_path, depth)
    elif cond == "STTC":
        kind = rng.choice(["depression", "inversion", "flat"], p=[0.4, 0.35, 0.25])
        p.extras["sttc_kind"] = str(kind)
        if kind in ("depression", "inversion"):
            vec[W["ST"]] = np.array([-0.09, 0.01, -0.02]) * rng.uniform(0.8, 1.5)
        if kind == "inversion":
            vec[W["T"]] = np.array([-0.20, -0.02, 0.05]) * rng.uniform(0.8, 1.3)
        elif kind == "flat":
            vec[W["T"]] *= rng.uniform(0.05, 0.25)
        else:
            vec[W["T"]] *= rng.uniform(0.3, 0.6)
        vec[W["T0"]] = 0.3 * vec[W["T"]]
    else:  # pragma: no cover - parse_conditions rejects unknown labels
        raise ValueError(cond)


def _shift_repolarisation(p: BeatParams, delta: float) -> None:
    """Move ST/T later by `delta` seconds."""
    for w in REPOL_WAVES:
        p.centers[W[w]] += delta


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def render_template(p: BeatParams, fs: int = FS, length: int = BEAT_LEN,
                    r_index: int = R_INDEX) -> np.ndarray:
    """Clean (noise-free) 12 x `length` beat with the R fiducial at sample `r_index`, mV."""
    t = (np.arange(length) - r_index) / fs
    g = np.exp(-0.5 * ((t[None, :] - p.centers[:, None]) / p.widths[:, None]) ** 2)
    dipole = p.vectors.T @ g  # (3, T)
    return expand_leads(p.lead_matrix @ dipole)


def rr_sequence(rng: np.random.Generator, p: BeatParams, seconds: float,
                extra_beat: bool = False) -> np.ndarray:
    """R-peak times (s) covering [-1.5 RR, seconds + 1 s]: sinus with HRV, or irregular AF."""
    n = int(np.ceil((seconds + 3.0) / (p.rr * 0.6))) + 4
    if p.af:
        rr = p.rr * rng.lognormal(0.0, p.rr_cv, n)
        rr = np.clip(rr, 0.3, 2.0)
    else:
        f_resp = rng.uniform(0.18, 0.3)
        phase = rng.uniform(0, 2 * np.pi)
        k = np.arange(n)
        rsa = p.rr_cv * np.sqrt(2) * 0.8 * np.sin(2 * np.pi * f_resp * k * p.rr + phase)
        rr = p.rr * (1 + rsa + rng.normal(0, 0.5 * p.rr_cv, n))
        if extra_beat:  # one premature supraventricular beat with a short non-compensatory pause
            j = int(rng.integers(3, max(4, int(seconds / p.rr)) + 1))
            rr[j] *= 0.68
            rr[j + 1] *= 1.15
    start = -rng.uniform(1.0, 1.5) * p.rr
    r = start + np.concatenate([[0.0], np.cumsum(rr)])
    return r[r < seconds + 1.0]


def render_strip(rng: np.random.Generator, p: BeatParams, r_times: np.ndarray, fs: int,
                 n_samples: int) -> np.ndarray:
    """Noise-free (8, n_samples) independent-lead signal for the given R times.

    Each wave is evaluated only within +-4 sigma of its centre and accumulated with bincount,
    which keeps a 10 s record at a fraction of a millisecond per wave.
    """
    rr_prev = np.diff(r_times, prepend=r_times[0] - p.rr)
    stretch = np.sqrt(np.clip(rr_prev / p.rr, 0.4, 2.5)) - 1.0
    qrs_off = p.qrs_off
    amp = 1.0 + 0.04 * np.sin(2 * np.pi * 0.25 * r_times + rng.uniform(0, 2 * np.pi))
    dipole = np.zeros((3, n_samples))
    active = np.flatnonzero(np.linalg.norm(p.vectors, axis=1) > 1e-6)
    for wi in active:
        centre = r_times + p.centers[wi]
        if WAVES[wi] in REPOL_WAVES:
            centre = centre + (p.centers[wi] - qrs_off) * stretch
        half = int(np.ceil(4 * p.widths[wi] * fs))
        idx = np.rint(centre * fs).astype(np.int64)[:, None] + np.arange(-half, half + 1)[None, :]
        val = np.exp(-0.5 * ((idx / fs - centre[:, None]) / p.widths[wi]) ** 2) * amp[:, None]
        ok = (idx >= 0) & (idx < n_samples)
        g = np.bincount(idx[ok], weights=val[ok], minlength=n_samples)
        dipole += np.outer(p.vectors[wi], g)
    if p.af:  # fibrillatory waves: an atrial dipole oscillating at 5-8 Hz with a wandering phase
        t = np.arange(n_samples) / fs
        phase = np.cumsum(rng.normal(0, 0.08 * np.sqrt(500 / fs), n_samples))
        fw = p.extras["f_amp"] * np.sin(2 * np.pi * p.extras["f_hz"] * t + phase)
        fw *= 1 + 0.3 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3))
        dipole += np.outer(np.array([0.25, 0.55, 0.8]), fw)
    return p.lead_matrix @ dipole


@dataclass
class NoiseSpec:
    """Noise levels of one recording (mV); flags say which noise a reader would notice."""

    white: float = 0.008
    wander: float = 0.05
    powerline: float = 0.005
    powerline_hz: float = 50.0
    burst: bool = False
    bad_electrode: int | None = None  # index into V1..V6


def sample_noise(rng: np.random.Generator, profile: str = "ptbxl") -> NoiseSpec:
    """Noise levels typical of a source: PTB-XL raw recordings, or the UK Biobank device."""
    if profile == "none":
        return NoiseSpec(0.0, 0.0, 0.0)
    if profile == "ukb":  # CardioSoft strips are filtered (baseline and 50 Hz filters on)
        return NoiseSpec(white=float(rng.uniform(0.003, 0.01)),
                         wander=float(rng.uniform(0.0, 0.04)),
                         powerline=float(rng.uniform(0.0, 0.003)))
    u = rng.random(4)
    return NoiseSpec(
        white=float(rng.uniform(0.004, 0.015) if u[0] > 0.1 else rng.uniform(0.03, 0.06)),
        wander=float(rng.uniform(0.01, 0.12) if u[1] > 0.12 else rng.uniform(0.25, 0.5)),
        powerline=float(rng.uniform(0.0, 0.02)),
        burst=bool(u[2] < 0.03),
        bad_electrode=int(rng.integers(0, 6)) if u[3] < 0.006 else None,
    )


def add_noise(rng: np.random.Generator, x: np.ndarray, fs: int, spec: NoiseSpec) -> dict[str, str]:
    """Add noise in place to the (8, T) independent leads; return PTB-XL style noise flags."""
    n_ch, n = x.shape
    t = np.arange(n) / fs
    flags: dict[str, str] = {}
    if spec.white > 0:
        x += spec.white * rng.standard_normal((n_ch, n), dtype=np.float32)
        if spec.white >= 0.03:
            flags["static_noise"] = " , alles,  "
    if spec.wander > 0:  # slow drifts: 3 shared low-frequency sinusoids mixed per electrode
        f = rng.uniform(0.05, 0.45, (3, 1))
        basis = np.sin(2 * np.pi * f * t[None, :] + rng.uniform(0, 2 * np.pi, (3, 1)))
        mix = spec.wander * rng.uniform(-1.0, 1.0, (n_ch, 3))
        x += mix @ basis
        if spec.wander >= 0.25:
            worst = int(np.argmax(np.abs(mix).sum(1)))
            flags["baseline_drift"] = " , " + ("I-AVF" if worst < 2 else INDEPENDENT[worst])
    if spec.powerline > 0:
        pl = np.sin(2 * np.pi * spec.powerline_hz * t + rng.uniform(0, 2 * np.pi))
        x += spec.powerline * rng.uniform(0.5, 1.0, (n_ch, 1)) * pl[None, :]
    if spec.burst:
        ch = int(rng.integers(2, n_ch))
        start = int(rng.integers(0, max(1, n - fs)))
        length = int(rng.uniform(0.3, 1.0) * fs)
        x[ch, start:start + length] += rng.normal(0, 0.25, x[ch, start:start + length].shape)
        flags["burst_noise"] = INDEPENDENT[ch]
    if spec.bad_electrode is not None:
        ch = 2 + spec.bad_electrode
        x[ch] = 0.1 * x[ch] + rng.normal(0, 0.15, n)
        flags["electrodes_problems"] = INDEPENDENT[ch]
    return flags


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------

def _frontal_axis(vectors: np.ndarray, widths: np.ndarray, lead_matrix: np.ndarray) -> float:
    """Frontal-plane axis (deg) of the net area of some waves, as seen through leads I and aVF."""
    area = (vectors * widths[:, None]).sum(0)
    lead_i = lead_matrix[0] @ area
    lead_avf = (lead_matrix[1] - lead_matrix[0] / 2) @ area
    return float(np.degrees(np.arctan2(lead_avf / np.sin(np.pi / 3), lead_i)))


def template_features(p: BeatParams, beat: np.ndarray) -> dict[str, float]:
    """ECG features: intervals/axes from the parameters, voltages/ST/T from the clean beat.

    These are what the synthetic hazard uses and what the UKB device measurements report, so
    they are, by construction, visible in the median beat.
    """
    on, off = p.qrs_on, p.qrs_off
    idx = lambda tt: int(np.clip(round(R_INDEX + tt * FS), 0, BEAT_LEN - 1))  # noqa: E731
    qrs = beat[:, idx(on):idx(off) + 1]
    v1, v5, v6 = LEADS.index("V1"), LEADS.index("V5"), LEADS.index("V6")
    sokolow = float(-qrs[v1].min() + max(qrs[v5].max(), qrs[v6].max()))
    st = beat[:, idx(off + 0.06)]
    st_leads = [i for i, n in enumerate(LEADS) if n != "aVR"]
    t_peak = idx(p.centers[W["T"]])
    upright = [LEADS.index(n) for n in ("I", "II", "aVL", "V3", "V4", "V5", "V6")]
    t_amp = beat[upright, t_peak]
    pv = p.vectors
    area_leads = lambda names: np.array([W[n] for n in names])  # noqa: E731
    qi, ti, pi = area_leads(QRS_WAVES), area_leads(("T0", "T")), area_leads(("P",))
    qt = p.t_end - on
    return {
        "hr_bpm": 60.0 / p.rr,
        "rr_ms": 1000 * p.rr,
        "pr_ms": np.nan if p.af else 1000 * (on - p.p_on),
        "p_ms": np.nan if p.af else 1000 * 2 * _TAIL * p.widths[W["P"]],
        "qrs_ms": 1000 * (off - on),
        "qt_ms": 1000 * qt,
        "qtc_ms": 1000 * qt / np.sqrt(p.rr),
        "p_axis": np.nan if p.af else _frontal_axis(pv[pi], p.widths[pi], p.lead_matrix),
        "r_axis": _frontal_axis(pv[qi], p.widths[qi], p.lead_matrix),
        "t_axis": _frontal_axis(pv[ti], p.widths[ti], p.lead_matrix),
        "sokolow_mv": sokolow,
        "st_min_mv": float(st[st_leads].min()),
        "st_max_mv": float(st[st_leads].max()),
        "t_inv_leads": float(np.sum(t_amp < -0.05)),
        "q_path": float(p.q_path),
        "af": float(p.af),
        "lbbb": float("CLBBB" in p.conditions),
        "rbbb": float("CRBBB" in p.conditions),
    }


# ---------------------------------------------------------------------------------------------
# Public record API
# ---------------------------------------------------------------------------------------------

@dataclass
class SyntheticRecord:
    """One simulated recording.

    signal: (12, fs * seconds) mV with noise; beat: (12, 600) clean template at 500 Hz with R at
    leads.R_INDEX; r_peaks: sample indices of R in `signal`; features: the ECG features driving
    the synthetic hazard; noise_flags: PTB-XL style noise annotations.
    """

    signal: np.ndarray
    beat: np.ndarray
    r_peaks: np.ndarray
    features: dict[str, float]
    labels: tuple[str, ...]
    params: BeatParams
    fs: int
    noise_flags: dict[str, str] = field(default_factory=dict)


def simulate_record(rng: np.random.Generator, label: str | Sequence[str] = "NORM", fs: int = FS,
                    seconds: float = 10.0, *, noise: str | NoiseSpec = "ptbxl",
                    params: BeatParams | None = None, extra_beat: bool = False,
                    **kw) -> SyntheticRecord:
    """Simulate one 12-lead recording of class `label` ('NORM', 'IMI+1AVB', ...).

    Extra keyword arguments (age, female, hr) go to `sample_beat_params`; `noise` is a profile
    name ('ptbxl', 'ukb', 'none') or a NoiseSpec; pass `params` to re-render a given subject.
    """
    p = params if params is not None else sample_beat_params(rng, label, **kw)
    n = int(round(fs * seconds))
    r_times = rr_sequence(rng, p, seconds, extra_beat=extra_beat and not p.af)
    x = render_strip(rng, p, r_times, fs, n)
    spec = noise if isinstance(noise, NoiseSpec) else sample_noise(rng, noise)
    flags = add_noise(rng, x, fs, spec)
    if extra_beat and not p.af:
        flags["extra_beats"] = "1ES" if rng.random() < 0.6 else "SVES"
    beat = render_template(p)
    feats = template_features(p, beat)
    r_in = r_times[(r_times >= 0) & (r_times * fs < n - 0.5)]
    feats["rr_cv_strip"] = float(np.std(np.diff(r_in)) / np.mean(np.diff(r_in))) \
        if r_in.size > 2 else float("nan")
    return SyntheticRecord(signal=expand_leads(x), beat=beat,
                           r_peaks=np.rint(r_in * fs).astype(np.int64), features=feats,
                           labels=p.conditions, params=p, fs=fs, noise_flags=flags)
