"""Lead order, beat geometry and the paper's lead-subset augmentation (docs/method.md section 1)."""

from __future__ import annotations

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF",
                          "V1", "V2", "V3", "V4", "V5", "V6")
N_LEADS = 12
FS = 500  # Hz, sampling rate of every median beat
BEAT_LEN = 600  # samples (1.2 s)
R_INDEX = 240  # sample index of the R peak inside a median beat
PAD = 4  # zero padding on each side: 600 -> 608
PADDED_LEN = BEAT_LEN + 2 * PAD

# Kept-lead subsets and their probabilities (the other leads are set to zero).
LEAD_SUBSETS: tuple[tuple[str, ...], ...] = (
    ("I", "II"),
    ("I", "II", "V2"),
    ("I", "II", "III", "V2"),
    ("I", "II", "III", "aVR", "aVL", "aVF"),
    ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"),
    LEADS,
)
LEAD_SUBSET_PROBS: tuple[float, ...] = (0.1, 0.1, 0.1, 0.1, 0.1, 0.5)

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")


def lead_index(name: str) -> int:
    """Index of a lead name in the standard order (case-insensitive for aVR/aVL/aVF)."""
    lookup = {n.lower(): i for i, n in enumerate(LEADS)}
    try:
        return lookup[name.strip().lower()]
    except KeyError as e:
        raise KeyError(f"unknown lead name {name!r}; expected one of {LEADS}") from e
