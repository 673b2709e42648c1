"""The real entry points, run cheaply (``+tiny`` overlay): every shipped experiment for one
step (finetuning from a real pretraining checkpoint where the architecture matches),
pretraining losses falling, InfoNCE with a learned temperature and the classification term
through the LightningModule, resume from last.ckpt, the finetuning protocol's outputs, and
the clear failures (divergence, wrong checkpoint, no events, no data).
Reliability cases (refused pickles, truncated checkpoints, changed configs) are in
``tests/test_reliability.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from ecg_dan.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    load_pretrained_backbone,
    read_checkpoint,
)
from ecg_dan.cli import main as cli
from ecg_dan.config import ConfigError, experiments, load_config, pretrain_objective
from ecg_dan.jobs.finetune import build_finetune_module, run_finetune
from ecg_dan.jobs.pretrain import run_pretrain
from ecg_dan.lit.finetune import DivergenceError, SurvivalFinetuneModule
from ecg_dan.models import ECGDAN, ModelConfig

TINY = ["+tiny"]


@pytest.fixture
def data_root(tiny_data_root) -> Path:
    return tiny_data_root


def _args(tmp_path: Path, data_root: Path, *extra: str) -> list[str]:
    return [*TINY, f"data.root={data_root}", f"run_dir={tmp_path / 'run'}", *extra]


@pytest.fixture
def pretrained(tiny_pretrained) -> Path:
    return tiny_pretrained


# The ResNet1d101 baseline takes tens of seconds per batch-64 step on a CPU.
_SLOW_EXPERIMENTS = {"baselines/resnet1d101_ae"}

# run key (see _run_key) -> results of the cell that ran it in this session
_RAN: dict[str, Path] = {}


def _run_key(cfg) -> str:
    """What a run reads of its config: not its name, run directory or W&B labels (W&B is off
    under +tiny), nor, finetuning from scratch, the pretraining section (read only to check a
    checkpoint). Cells with the same key are the same run: the pretraining ablations,
    finetuned here from scratch, are ``ablations/scratch``; ``pretrain_short`` under +tiny is
    ``demo_pretrain``."""
    d = OmegaConf.to_container(cfg, resolve=True)
    for key in ("name", "run_dir", "logging"):
        d.pop(key)
    random_encoder = d["task"] == "finetune" or d["baseline"]["features"] == "encoder"
    if random_encoder and d["finetune"]["scratch"]:  # the probes of a random encoder too
        d.pop("pretrain")
    return json.dumps(d, sort_keys=True, default=str)


@pytest.mark.parametrize("experiment", [
    pytest.param(e, marks=pytest.mark.slow) if e in _SLOW_EXPERIMENTS else e
    for e in experiments()])
def test_every_experiment_runs_one_step(experiment, tmp_path, data_root, pretrained):
    cfg = load_config(experiment, _args(tmp_path, data_root, "trainer.limit_train_batches=1",
                                        "trainer.limit_val_batches=1", "trainer.max_epochs=1"))
    if cfg.task == "pretrain":
        key = _run_key(cfg)  # an earlier cell's identical run: its checkpoint
        ckpt = _RAN.get(key) or Path(run_pretrain(cfg)["checkpoint"])
        assert read_checkpoint(ckpt, kind="pretrain")
        _RAN[key] = ckpt
        return
    if cfg.task == "cox_baseline":  # no network; end to end in tests/test_cox_baseline.py
        if cfg.baseline.features == "ecgdan_clinical":
            pytest.skip("needs a finished ECG-DAN run (tests/test_cox_baseline.py fakes one)")
        cfg.baseline.n_penalties = 3
        if cfg.baseline.features == "encoder" and not cfg.finetune.scratch:
            # the survival probe of the pretrained encoder, of a random one for another
            # objective (its own pretraining is `make ablations`' job)
            objective = read_checkpoint(pretrained)["ecg_dan"]["objective"]
            if objective == pretrain_objective(cfg.pretrain):
                cfg.finetune.ckpt = str(pretrained)
            else:
                cfg.finetune.scratch = True
        key = _run_key(cfg)  # an earlier cell's identical run: its results
        run_dir = _RAN.get(key) or run_finetune(cfg)
        assert (run_dir / "results.md").is_file()
        _RAN[key] = run_dir
        return
    meta = read_checkpoint(pretrained)["ecg_dan"]
    same_arch = OmegaConf.to_container(cfg.model) == {
        **OmegaConf.to_container(cfg.model), **meta["model_config"], "batchwise_dropout":
            cfg.model.batchwise_dropout}
    # a pretraining ablation names another objective: the paper's checkpoint is refused
    # (tests/test_pretrain_objective.py); `make ablations` pretrains it with its own
    same_objective = meta["objective"] == pretrain_objective(cfg.pretrain)
    if same_arch and same_objective and not cfg.finetune.scratch:
        cfg.finetune.ckpt = str(pretrained)  # the real pretrained -> finetuning path
    else:
        cfg.finetune.scratch = True  # another architecture or objective: no checkpoint fits
    key = _run_key(cfg)
    run_dir = _RAN.get(key) or run_finetune(cfg)  # an earlier cell's identical run: its results
    assert (run_dir / "results.md").is_file()
    hashes = {json.loads(p.read_text())["config_hash"]
              for p in (run_dir / "predictions").glob("seed*_fold?.json")}
    assert len(hashes) == 1  # every fold records the config that produced it
    _RAN[key] = run_dir


def test_finetuning_starts_from_the_pretrained_weights(data_root, pretrained, tmp_path):
    cfg = load_config("finetune_hyp", _args(tmp_path, data_root, f"finetune.ckpt={pretrained}"))
    module = build_finetune_module(cfg, str(pretrained))
    meta = read_checkpoint(pretrained)["ecg_dan"]
    for key, value in meta["encoder"].items():
        assert torch.equal(module.backbone.encoder.state_dict()[key], value), key
    scratch = build_finetune_module(cfg, None)
    assert not torch.equal(scratch.backbone.encoder.pool_avg.weight,
                           meta["encoder"]["pool_avg.weight"])


def test_pretraining_losses_fall_through_cli(tmp_path, data_root):
    code = cli(["pretrain", "demo_pretrain", *_args(
        tmp_path, data_root, "trainer.max_epochs=5", "pretrain.batch_size=16",
        "optim.schedule=constant", "optim.lr=2e-3", "trainer.limit_train_batches=6",
        "trainer.limit_val_batches=2")])
    assert code == 0
    log = pd.read_csv(tmp_path / "run" / "csv" / "version_0" / "metrics.csv")
    for key in ("train/recon_mse_epoch", "train/align_epoch", "train/loss_epoch"):
        values = log[key].dropna().to_numpy()
        assert len(values) == 5, key
        assert values[-1] < values[0] * 0.9, (key, values)
    assert {"val/recon_mse", "val/align"} <= set(log.columns)
    assert (tmp_path / "run" / "config.yaml").is_file()
    ckpt = read_checkpoint(next((tmp_path / "run" / "checkpoints").glob("best-*.ckpt")),
                           kind="pretrain")
    meta = ckpt["ecg_dan"]
    assert "minilm" in meta["text_model"].lower()
    assert meta["config"]["name"] == "demo_pretrain"
    assert set(meta["encoder"]) == set(ECGDAN(ModelConfig()).encoder.state_dict())
    assert not (tmp_path / "run" / "pretrain_eval.json").exists()  # +tiny: evaluate=false


def test_infonce_learned_temperature_and_classification_term(tmp_path, data_root):
    """InfoNCE with a learned temperature and the optional BCE term, through the real job."""
    out = run_pretrain(load_config("demo_pretrain", _args(
        tmp_path, data_root, "pretrain.alignment=infonce", "pretrain.learn_temperature=true",
        "pretrain.temperature=0.1", "pretrain.w_cls=1.0", "optim.schedule=constant",
        "optim.lr=1e-2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1")))
    log = pd.read_csv(tmp_path / "run" / "csv" / "version_0" / "metrics.csv")
    assert log["train/cls_bce_step"].dropna().size == 4
    assert log["train/align_step"].dropna().gt(0).all()
    temps = log["train/temperature"].dropna().to_numpy()
    assert temps.size == 4 and not np.allclose(temps, 0.1)  # the temperature was trained
    state = read_checkpoint(out["checkpoint"])["state_dict"]
    assert state["cls_head.0.weight"].shape == (512,)  # the head was trained and saved
    assert float(state["log_temperature"].exp()) == pytest.approx(temps[-1], rel=0.2)


def test_resume_continues_from_last_ckpt(tmp_path, data_root):
    base = _args(tmp_path, data_root, "trainer.limit_train_batches=3",
                 "trainer.limit_val_batches=1")
    run_pretrain(load_config("demo_pretrain", [*base, "trainer.max_epochs=1"]))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = read_checkpoint(last)
    run_pretrain(load_config("demo_pretrain", [*base, "trainer.max_epochs=2"]))
    second = read_checkpoint(last)
    assert first["global_step"] == 3
    assert second["global_step"] == 6
    # both parts of the CSV log are kept (a resumed run writes a new version folder)
    logs = sorted((tmp_path / "run" / "csv").glob("version_*/metrics.csv"))
    assert len(logs) == 2
    # the LR schedule continued (per-step scheduler state restored), not restarted
    assert second["lr_schedulers"][0]["last_epoch"] == second["global_step"]


def test_last_ckpt_holds_the_last_epoch_when_the_best_was_early(tmp_path, data_root,
                                                                monkeypatch):
    """A monitored metric that only gets worse: the best epoch is the first, yet last.ckpt
    must hold the final epoch and a re-run continues from there."""
    from ecg_dan.lit.pretrain import AlignmentPretrainModule

    def worsening(self, batch, batch_idx):
        self.log("val/recon_mse", float(self.current_epoch), batch_size=batch["x"].shape[0])

    monkeypatch.setattr(AlignmentPretrainModule, "validation_step", worsening)
    base = _args(tmp_path, data_root, "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "pretrain.evaluate=false")
    run_pretrain(load_config("demo_pretrain", [*base, "trainer.max_epochs=3"]))
    ckpts = tmp_path / "run" / "checkpoints"
    best = read_checkpoint(next(ckpts.glob("best-*.ckpt")))
    last = read_checkpoint(ckpts / "last.ckpt")
    assert best["epoch"] == 0 and last["epoch"] == 2 and last["global_step"] == 6
    run_pretrain(load_config("demo_pretrain", [*base, "trainer.max_epochs=4"]))
    assert read_checkpoint(ckpts / "last.ckpt")["global_step"] == 8  # one more epoch, not 3


def test_finetune_protocol_outputs_and_regeneration(tmp_path, data_root, pretrained):
    cfg = load_config("demo_finetune", _args(
        tmp_path, data_root, f"finetune.ckpt={pretrained}", "finetune.seeds=[42,2021]",
        "finetune.n_boot=50", "trainer.limit_val_batches=1"))
    run_dir = run_finetune(cfg)
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    with h5py.File(next(data_root.glob("*ukb*.h5")), "r") as f:
        hyp = set(f["eid"][...][f["cohort_hyp"][...].astype(bool)])
    for seed, part in oof.groupby("seed"):
        assert sorted(part.eid) == sorted(hyp), seed  # everyone held out once per seed
    assert set(oof.fold) == {0, 1} and np.isfinite(oof.risk).all()
    table = pd.read_csv(run_dir / "results.csv")
    assert {"fold", "mean", "std_paper", "std_all", "pooled"} <= set(table.row)
    assert (run_dir / "kaplan_meier.png").stat().st_size > 1000
    assert (run_dir / "splits.json").is_file()
    md = (run_dir / "results.md").read_text()
    assert "Oracle C-index" in md
    os.remove(run_dir / "results.md")
    assert cli(["evaluate", "finetune", str(run_dir)]) == 0  # from the saved predictions alone
    assert (run_dir / "results.md").read_text() == md
    # re-running with the same config skips finished folds instead of retraining them
    stamp = (run_dir / "predictions" / "seed42_fold0.csv").stat().st_mtime_ns
    run_finetune(cfg)
    assert (run_dir / "predictions" / "seed42_fold0.csv").stat().st_mtime_ns == stamp


def test_lr_finder_option_sets_the_learning_rate(tmp_path, data_root):
    cfg = load_config("demo_finetune", _args(
        tmp_path, data_root, "finetune.scratch=true", "finetune.lr_find=true",
        "finetune.lr_find_steps=12", "finetune.batch_size=8", "trainer.max_epochs=1",
        "trainer.limit_val_batches=1"))
    run_dir = run_finetune(cfg)
    found = json.loads((run_dir / "seed42_fold0" / "lr_find.json").read_text())
    assert 1e-7 <= found["suggestion"] <= 1e-2 and len(found["lr"]) >= 8
    ckpt = read_checkpoint(next((run_dir / "seed42_fold0" / "checkpoints").glob("best-*.ckpt")))
    assert ckpt["hyper_parameters"]["finetune"]["lr"] == cfg.finetune.lr  # config untouched
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(
        found["suggestion"])


def test_finetune_honours_the_optim_schedule(tmp_path, data_root):
    cfg = load_config("demo_finetune", _args(
        tmp_path, data_root, "finetune.scratch=true", "optim.schedule=warmup_cosine",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "finetune.n_folds=2"))
    run_dir = run_finetune(cfg)
    ckpt = read_checkpoint(run_dir / "seed42_fold0" / "checkpoints" / "last.ckpt")
    assert ckpt["lr_schedulers"] and ckpt["lr_schedulers"][0]["last_epoch"] == 2


def test_logistic_hazard_finetuning_end_to_end(tiny_lh_run):
    run_dir = tiny_lh_run  # tests/conftest.py: from scratch, n_time_bins=6, through the job
    pred = run_dir / "predictions"
    test = pd.read_csv(pred / "seed42_fold0.csv")
    assert len(test) and np.isfinite(test.risk).all() and (test.risk <= 0).all()
    assert not [c for c in test.columns if c.startswith("surv_")]  # curves: in the sidecar
    with np.load(pred / "seed42_fold0_surv.npz") as z:
        eid, surv, cuts = z["eid"], z["surv"], z["cuts"]
    assert (eid == test.eid.to_numpy()).all() and surv.shape == (len(test), 6)
    assert cuts.shape == (6,) and cuts[0] == 0 and (np.diff(cuts) > 0).all()
    assert ((surv >= 0) & (surv <= 1)).all() and (np.diff(surv, axis=1) <= 0).all()
    ckpt = read_checkpoint(run_dir / json.loads((pred / "seed42_fold0.json").read_text())[
        "checkpoint"])  # relative to the run
    assert ckpt["hyper_parameters"]["cuts"] == pytest.approx(cuts.tolist())  # plain list
    table = pd.read_csv(run_dir / "results.csv")
    assert "antolini_c" in table
    folds = table[table.row == "fold"].antolini_c
    assert folds.notna().all() and folds.between(0, 1).all()


def test_finetune_requires_a_checkpoint_or_scratch(tmp_path, data_root):
    cfg = load_config("demo_finetune", _args(tmp_path, data_root))
    with pytest.raises(ConfigError, match="finetune.scratch=true"):
        run_finetune(cfg)


def test_evaluate_pretrain_cli_with_ckpt_flag_and_overrides(pretrained, capsys):
    json_path = pretrained.parent.parent / "pretrain_eval.json"
    json_path.unlink()
    assert cli(["evaluate", "pretrain", "--ckpt", str(pretrained), "--few-shot", "5,all",
                "logging.wandb=false", "--few-shot-draws=2"]) == 0
    res = json.loads(json_path.read_text())
    curve = res["few_shot_probe"]  # and its files beside pretrain_eval.json
    assert [r["labels_per_class"] for r in curve["rows"]] == [5, "all"]
    assert [r["n_draws"] for r in curve["rows"]] == [2, 1]
    for ext in ("md", "csv", "json", "png"):
        assert (json_path.parent / f"probe_few_shot.{ext}").is_file()
    probe = res["linear_probe"]
    assert probe["columns"] == ["pretrained", "random init"]
    macro = probe["macro"]
    assert 0.0 <= macro["pretrained"] <= 1.0 and 0.0 <= macro["random init"] <= 1.0
    assert macro["delta"] == pytest.approx(macro["pretrained"] - macro["random init"])
    assert res["checkpoint"] == str(pretrained)
    assert 0.0 <= res["retrieval"]["recall"]["5"] <= 1.0
    assert "Linear probe" in capsys.readouterr().out
    # overrides go through the schema: a misspelled key is an error, not ignored
    assert cli(["evaluate", "pretrain", "--ckpt", str(pretrained), "logging.wandbb=false"]) == 2
    assert "unknown config key 'logging.wandbb'" in capsys.readouterr().err


def test_checkpoint_of_another_architecture_is_refused(pretrained):
    other = ECGDAN(ModelConfig(latent_dim=64))
    with pytest.raises(CheckpointMismatchError, match=r"model.latent_dim: checkpoint 512"):
        load_pretrained_backbone(other, pretrained)
    ok = ECGDAN(ModelConfig(batchwise_dropout=True))  # dropout style changes no weights
    meta = load_pretrained_backbone(ok, pretrained)
    assert torch.equal(ok.encoder.pool_avg.weight, meta["encoder"]["pool_avg.weight"])


def test_non_checkpoint_file_is_refused(tmp_path):
    bad = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="expected a pretraining checkpoint.*not an ecg-dan"):
        load_pretrained_backbone(ECGDAN(ModelConfig()), bad)


def test_divergence_stops_with_clear_message_and_keeps_last_good(tmp_path, data_root):
    cfg = load_config("demo_finetune", _args(tmp_path, data_root, "finetune.scratch=true",
                                             "trainer.max_epochs=2",
                                             "trainer.limit_train_batches=2",
                                             "trainer.limit_val_batches=1"))
    calls = {"n": 0}
    original = SurvivalFinetuneModule.forward

    def exploding(self, x, return_attention=False):
        out = original(self, x, return_attention)
        if self.training and self.current_epoch == 1:
            calls["n"] += 1
            out["log_risk"] = out["log_risk"] * float("nan")
        return out

    SurvivalFinetuneModule.forward = exploding
    try:
        with pytest.raises(DivergenceError, match="non-finite risk.*last good checkpoint"):
            run_finetune(cfg)
    finally:
        SurvivalFinetuneModule.forward = original
    assert calls["n"] == 1
    last = tmp_path / "run" / "seed42_fold0" / "checkpoints" / "last.ckpt"
    state = read_checkpoint(last)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values()
               if v.is_floating_point())


def test_cohort_without_events_is_a_clear_error(tmp_path, data_root):
    cache = next(data_root.glob("*ukb*.h5"))
    no_events = tmp_path / "no_events.h5"
    with h5py.File(cache, "r") as src, h5py.File(no_events, "w") as dst:
        for k in src:
            src.copy(k, dst)
        dst.attrs.update(dict(src.attrs))
        dst["event"][...] = 0
    cfg = load_config("demo_finetune", _args(tmp_path, data_root, "finetune.scratch=true",
                                             f"data.ukb_cache={no_events}",
                                             "data.source=real"))
    with pytest.raises(ValueError, match="no events"):
        run_finetune(cfg)


def test_make_pretrain_without_data_explains(capsys):
    from ecg_dan.make_targets import main as make_main

    assert make_main(["pretrain", "DATA=", "PTBXL_DIR="]) == 2
    err = capsys.readouterr().err
    assert "PTB-XL" in err and "DATA=synthetic" in err and "physionet" in err.lower()


def test_make_ablations_runs_the_matrix_resumably_and_compares(tmp_path, data_root,
                                                               monkeypatch, capsys):
    import ecg_dan.jobs.matrix as matrix
    from ecg_dan.make_targets import main as make_main

    monkeypatch.chdir(tmp_path)
    # the comparisons' bootstrap at the cells' size (make passes none: 1000 resamples per
    # model, most of this test's time otherwise); the table's shape does not depend on it
    compare = matrix.run_compare
    monkeypatch.setattr(matrix, "run_compare",
                        lambda *a, **kw: compare(*a, **{"n_boot": 20, **kw}))
    tiny = [*TINY, f"data.root={data_root}", "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1", "finetune.n_boot=20", "baseline.n_penalties=3"]
    cmd = ["ablations", "DATA=synthetic", "COHORT=mi",
           "ABLATIONS=ecgdan_clinical_cox,proposed,no_temporal,clinical_cox"]
    assert make_main([*cmd, "--", *tiny]) == 0
    root = Path("runs/matrix_mi_synthetic")
    pre = read_checkpoint(next((root / "pretrain" / "no_temporal" / "checkpoints")
                               .glob("best-*.ckpt")))
    assert pre["ecg_dan"]["model_config"]["temporal_attention"] is False
    cell = OmegaConf.load(root / "no_temporal" / "config.yaml")
    assert cell.model.temporal_attention is False and cell.finetune.top_fraction == 0.04
    table = pd.read_csv(root / "comparison" / "comparison.csv")
    assert list(table.model) == ["proposed", "no_temporal", "clinical_cox",
                                 "ecgdan_clinical_cox"]  # the matrix's order
    assert table.reference.tolist() == [True, False, False, False]
    assert (root / "comparison" / "forest_plot.png").stat().st_size > 1000
    # the incremental value over age and sex, on the real ECG-DAN cell's risks
    incr = pd.read_csv(root / "comparison_vs_clinical" / "comparison.csv")
    assert list(incr.model) == ["clinical_cox", "ecgdan_clinical_cox", "proposed"]
    assert incr.reference.tolist() == [True, False, False]
    assert np.isfinite(incr.diff_vs_ref).all()
    # resumable: the same command skips finished cells
    stamp = (root / "no_temporal" / "predictions" / "seed42_fold0.csv").stat().st_mtime_ns
    assert make_main([*cmd, "--", *tiny]) == 0
    assert (root / "no_temporal" / "predictions" / "seed42_fold0.csv").stat().st_mtime_ns == stamp
    # a changed config is refused with the keys named
    capsys.readouterr()
    assert make_main([*cmd, "--", *tiny, "finetune.alpha=0.25"]) == 2
    assert "finetune.alpha" in capsys.readouterr().err
    assert make_main(["ablations", "DATA=synthetic", "ABLATIONS=nope"]) == 2
    # COHORT=all: each cohort's matrix (the MI cell is reused), one row per cell, both cohorts
    assert make_main(["ablations", "DATA=synthetic", "COHORT=all", "ABLATIONS=clinical_cox",
                      "--", *tiny]) == 0
    both = pd.read_csv("runs/matrix_all_synthetic/comparison/comparison.csv")
    assert list(both.model) == ["clinical_cox"]
    mi_alone = table.set_index("model").loc["clinical_cox"]
    assert both.mi_c_pooled[0] == pytest.approx(mi_alone.c_pooled)
    assert np.isfinite(both.hyp_c_pooled[0]) and both.hyp_n[0] != both.mi_n[0]


def test_wandb_offline_logging_of_results(tmp_path, monkeypatch):
    """The W&B path the suite otherwise disables: nested results, a table and a figure
    go into an offline run of the experiment's group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ecg_dan.jobs.common import log_wandb_summary

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config("demo_finetune", [f"run_dir={tmp_path}", "logging.wandb=true"])
    png = tmp_path / "fig.png"
    plt.plot([0, 1], [1, 0])
    plt.savefig(png)
    results = {"linear_probe": {"pretrained": {"macro_auroc": 0.8, "per_class": {"MI": 0.7}},
                                "note": "text is skipped"}, "flag": True}
    log_wandb_summary(cfg, "pretrain_eval", results,
                      table=pd.DataFrame({"row": ["mean"], "harrell_c": [0.7]}), image=png)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    import wandb

    assert wandb.run is None  # our run was finished, nothing left open
