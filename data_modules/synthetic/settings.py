"""Settings of the synthetic twin: ``standard`` (the default) and ``hard``.

The standard twin separates its classes easily (a random encoder's linear probe already
scores ~0.99) and its hazard uses features the UK Biobank device measurements also report,
so it cannot separate pretraining strategies or show what an ECG network adds over the
biomarker Cox model. The hard twin (docs/method.md section 6, "known-answer check") makes
four changes, each a knob here:

- subtler class morphology: each subject's label edits are scaled by a severity drawn
  uniformly from ``severity`` (1 = the textbook pattern), so classes overlap and the risk
  features vary continuously;
- label noise: a fraction ``label_noise`` of PTB-XL records carry another record's SCP
  codes and report (the text the encoder is aligned to no longer always matches the beat);
- realistic device noise: the UK Biobank median beats carry ``median_noise_mv`` of residual
  noise instead of 4 uV;
- a hazard driven by morphology the device measurements miss or only dichotomise: the
  depth of pathological Q waves (no biomarker), continuous ST depression and T inversion
  (the biomarkers threshold them), with the device-measured intervals and rate weighted
  down.

Combined with ``events: paper`` (the paper's event rates) it is the setting the comparison
matrix is checked on (benchmarks/synthetic_matrix.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SettingName = Literal["standard", "hard"]

# Log-hazard contributions (per unit of each feature, relative to a reference value).
STANDARD_COEFS: dict[str, float] = {
    "age": 0.068,  # per year above 65
    "qrs_ms": 0.023,  # per ms above 100
    "sokolow_mv": 0.47,  # per mV above 3.0 (only above)
    "q_path": 1.9,  # per mV of pathological Q depth (0 if none)
    "st_dep_mv": 6.3,  # per mV of ST depression beyond 0.03 mV
    "t_inv_leads": 0.17,  # per lead with an inverted T (of I, II, aVL, V3-V6)
    "af": 1.05,
    "hr_bpm": 0.016,  # per bpm above 70
    "qtc_ms": 0.0063,  # per ms above 420
}
HARD_COEFS: dict[str, float] = {
    "age": 0.068,
    "qrs_ms": 0.006,
    "sokolow_mv": 0.2,
    "q_path": 3.2,
    "st_dep_mv": 14.0,
    "t_inv_leads": 0.35,
    "af": 0.5,
    "hr_bpm": 0.004,
    "qtc_ms": 0.0015,
}


@dataclass(frozen=True)
class TwinSetting:
    name: SettingName
    severity: tuple[float, float] = (1.0, 1.0)
    label_noise: float = 0.0
    median_noise_mv: float = 0.004
    coefs: dict[str, float] = field(default_factory=lambda: dict(STANDARD_COEFS))


SETTINGS: dict[str, TwinSetting] = {
    "standard": TwinSetting("standard"),
    "hard": TwinSetting("hard", severity=(0.25, 1.0), label_noise=0.15, median_noise_mv=0.02,
                        coefs=dict(HARD_COEFS)),
}


def twin_setting(name: str) -> TwinSetting:
    if name not in SETTINGS:
        raise ValueError(f"synthetic setting must be one of {sorted(SETTINGS)}, got {name!r}")
    return SETTINGS[name]


def draw_severity(setting: TwinSetting, *key: int) -> float:
    """A subject's severity, from its own generator (``key``) so no other draw moves."""
    lo, hi = setting.severity
    if lo == hi == 1.0:
        return 1.0
    return float(np.random.default_rng([*key, 99]).uniform(lo, hi))
