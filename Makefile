# ecg-dan: every target installs first (idempotent, fast when nothing changed).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
COHORT ?= hyp
DATA   ?=
CKPT   ?=
SCRATCH ?=
ARGS   ?=
PTBXL_DIR ?=
MIMIC_DIR ?=
CORPUS ?= ptbxl
ABLATIONS ?=
FRACTIONS ?=

export WANDB_SILENT := true

.PHONY: install demo test lint bench pretrain finetune ablations clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: install
	$(BIN)/ecg-dan demo $(ARGS)

test: install
	WANDB_MODE=disabled HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/bench_backbone.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_text.py

pretrain: install
	$(BIN)/python -m ecg_dan.make_targets pretrain "DATA=$(DATA)" "CORPUS=$(CORPUS)" "PTBXL_DIR=$(PTBXL_DIR)" "MIMIC_DIR=$(MIMIC_DIR)" -- $(ARGS)

finetune: install
	$(BIN)/python -m ecg_dan.make_targets finetune "DATA=$(DATA)" "COHORT=$(COHORT)" "CKPT=$(CKPT)" "SCRATCH=$(SCRATCH)" -- $(ARGS)

ablations: install
	$(BIN)/python -m ecg_dan.make_targets ablations "DATA=$(DATA)" "COHORT=$(COHORT)" "CKPT=$(CKPT)" "ABLATIONS=$(ABLATIONS)" "FRACTIONS=$(FRACTIONS)" "PTBXL_DIR=$(PTBXL_DIR)" -- $(ARGS)

clean:
	rm -rf runs data .pytest_cache
