"""Training losses."""

from ecg_dan.losses.cox import cox_ph_loss

__all__ = ["cox_ph_loss"]
