"""LightningModules: alignment pretraining and survival finetuning on one ECG-DAN backbone."""
