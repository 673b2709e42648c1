"""Interpretability of ECG-DAN (docs/method.md section 8): attention maps, gradient maps on
the beat, the latent space, and their figures."""

from ecg_dan.interpretation.single import explain_ecg

__all__ = ["explain_ecg"]
