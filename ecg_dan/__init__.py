"""ecg-dan: ECG Dual Attention Network with LLM-informed pretraining for HF risk."""

__version__ = "0.1.0"
