"""Evaluation of pretrained encoders (linear probe, retrieval, zero-shot) on numpy embeddings."""

from ecg_dan.evaluation.pretrain_eval import (
    DEFAULT_CS,
    SUPERCLASSES,
    compare_probes,
    linear_probe,
    retrieval_recall,
    superclass_prompts,
    superclass_text_embeddings,
    zero_shot_superclass,
)

__all__ = [
    "DEFAULT_CS",
    "SUPERCLASSES",
    "compare_probes",
    "linear_probe",
    "retrieval_recall",
    "superclass_prompts",
    "superclass_text_embeddings",
    "zero_shot_superclass",
]
