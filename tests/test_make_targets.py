"""``make pretrain|finetune|ablations`` variables -> configs (ecg_dan/make_targets.py), without
running anything."""

from __future__ import annotations

import pytest

from ecg_dan.config import (
    ConfigError,
    finetune_cohorts,
    finetune_experiment,
    load_config,
    paper_cohorts,
)
from ecg_dan.jobs.matrix import Matrix
from ecg_dan.make_targets import finetune_config


def test_each_cohort_names_its_paper_experiment():
    assert finetune_cohorts() == ["hyp", "mi", "code15"]
    assert paper_cohorts() == ["hyp", "mi"]
    for cohort in paper_cohorts():
        assert load_config(finetune_experiment(cohort)).finetune.cohort == cohort


def test_code15_finetunes_every_row_of_its_cohort_cache():
    cfg = finetune_config({"COHORT": "code15", "DATA": "synthetic", "SCRATCH": "1"}, [])
    assert cfg.name == "finetune_code15_scratch_synthetic" and cfg.finetune.cohort == "all"
    assert cfg.data.synthetic_cohort == "code15"
    cell = Matrix("code15", True).finetune_config("clinical_cox", "baselines/clinical_cox", None)
    assert cell.finetune.cohort == "all" and cell.run_dir == \
        "runs/matrix_code15_synthetic/clinical_cox"


@pytest.mark.parametrize("make_vars, name", [
    ({"CKPT": "pre.ckpt"}, "finetune_hyp"),
    ({"SCRATCH": "1"}, "finetune_hyp_scratch"),
    ({"SCRATCH": "1", "COHORT": "mi"}, "finetune_mi_scratch"),
    ({"DATA": "synthetic", "CKPT": "pre.ckpt"}, "finetune_hyp_synthetic"),
    ({"DATA": "synthetic", "SCRATCH": "1"}, "finetune_hyp_scratch_synthetic"),
])
def test_scratch_and_checkpoint_runs_get_their_own_run_directory(make_vars, name):
    cfg = finetune_config(make_vars, [])
    assert cfg.name == name and cfg.run_dir == f"runs/{name}"
    assert cfg.finetune.scratch == bool(make_vars.get("SCRATCH"))
    assert cfg.finetune.ckpt == (None if make_vars.get("SCRATCH") else "pre.ckpt")


def test_a_name_in_args_still_wins():
    assert finetune_config({"SCRATCH": "1"}, ["name=mine"]).name == "mine"


def test_an_unknown_cohort_lists_the_known_ones():
    with pytest.raises(ConfigError, match="COHORT=all: expected one of hyp, mi, code15"):
        finetune_config({"COHORT": "all"}, [])
