"""Training losses."""

from ecg_dan.losses.cox import CoxPHLoss, cox_ph_loss

__all__ = ["CoxPHLoss", "cox_ph_loss"]
