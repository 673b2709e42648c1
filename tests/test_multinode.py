"""Multi-node DDP through the CLI: 2 nodes x 1 process started by ``torchrun --nnodes 2`` on
this machine (gloo on localhost), with the +torchrun overlay: one checkpoint writer, the same
weights on every rank and in the checkpoint, and a resume that continues the epoch count.
Each rank reports itself through ``ECG_DAN_RANK_REPORT`` (ecg_dan.trainer.RankReport)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ecg_dan.checkpoints import read_checkpoint
from ecg_dan.trainer import state_sha256
from tests.helpers import run_torchrun_nodes


def _reports(folder: Path) -> list[dict]:
    reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["global_rank"], r["node_rank"], r["world_size"], r["num_nodes"])
            for r in reports] == [(0, 0, 2, 2), (1, 1, 2, 2)]
    return reports


@pytest.mark.slow
def test_two_nodes_one_writer_same_weights_and_resume(tmp_path, tiny_data_root):
    run = tmp_path / "run"
    # reconstruction only (no text model), the attention-free encoder, 2 steps of 4 beats an
    # epoch, one thread per process: the processes' start-up is most of the cost
    args = ["pretrain", "demo_pretrain", "+tiny", "+torchrun", "pretrain.w_align=0",
            "pretrain.batch_size=4", "model.temporal_attention=false",
            "model.cross_lead_attention=false", f"data.root={tiny_data_root}",
            f"run_dir={run}", "trainer.accelerator=cpu", "trainer.threads=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    ckpts = run / "checkpoints"
    for epochs in (1, 2):  # the second launch resumes from last.ckpt
        report_dir = tmp_path / f"ranks{epochs}"
        outs = run_torchrun_nodes([*args, f"trainer.max_epochs={epochs}"],
                                  env={"ECG_DAN_RANK_REPORT": str(report_dir)})
        lead, other = _reports(report_dir)
        # one writer: rank 0 wrote every checkpoint, rank 1 none; no partial files left
        assert other["checkpoints_written"] == []
        assert {Path(p).name for p in lead["checkpoints_written"]} >= {"last.ckpt"}
        names = sorted(p.name for p in ckpts.iterdir())  # save_top_k=1: a best, the last
        assert len(names) == 2 and names[0].startswith("best-") and names[1] == "last.ckpt"
        assert not [p for p in run.rglob("*") if p.name.startswith(".")]  # atomic tmp files
        # the same weights on both ranks, and in the checkpoint rank 0 wrote
        last = read_checkpoint(ckpts / "last.ckpt", kind="pretrain")
        assert lead["state_sha256"] == other["state_sha256"] == state_sha256(
            last["state_dict"])
        assert (last["epoch"], last["global_step"]) == (epochs - 1, 2 * epochs)
        assert lead["global_step"] == other["global_step"] == 2 * epochs
    assert "Restored all states from the checkpoint" in outs[0]
    assert len(list((run / "csv").glob("version_*"))) == 2  # one log per launch, rank 0's


@pytest.fixture
def restored_environ():
    """Lightning's SLURM environment writes MASTER_ADDR / MASTER_PORT into ``os.environ``;
    left there, every later DDP subprocess of the session would rendezvous at the fake job's
    node and hang."""
    saved = os.environ.copy()
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_slurm_overlay_takes_the_topology_from_the_job(monkeypatch, tmp_path,
                                                       restored_environ):
    """+slurm under a (simulated) 2-node x 2-task job, as its global rank 3: Lightning's
    SLURM environment, the job's topology, and no file written by a rank other than 0."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    from ecg_dan.config import load_config
    from ecg_dan.trainer import build_trainer

    for key, value in {"SLURM_NTASKS": "4", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "2",
                       "SLURM_JOB_NAME": "ecg-dan", "SLURM_JOB_ID": "1234",
                       "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
                       "SLURM_NODELIST": "node[1-2]"}.items():
        monkeypatch.setenv(key, value)
    # as Lightning's import sets it in a process srun starts as rank 3 (and restored after)
    monkeypatch.setattr(rank_zero_only, "rank", 3)
    cfg = load_config("demo_pretrain", ["+tiny", "+slurm", "trainer.accelerator=cpu"])
    trainer = build_trainer(cfg, tmp_path / "run")
    env = trainer.strategy.cluster_environment
    assert type(env).__name__ == "SLURMEnvironment" and env.main_address == "node1"
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 2, 4)
    assert (trainer.global_rank, trainer.node_rank, trainer.local_rank) == (3, 1, 1)
    assert not list((tmp_path / "run").rglob("*.*"))  # config.yaml is rank 0's to write
    assert os.environ["MASTER_ADDR"] == "node1"  # what restored_environ takes back
