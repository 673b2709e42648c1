"""Reliability through the real entry points: no code from checkpoints, no stale results,
progress never lost, one-line user errors (README "Reliability")."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from ecg_dan.checkpoints import CheckpointError, SafeCheckpointIO, read_checkpoint
from ecg_dan.cli import main as cli
from ecg_dan.config import ConfigError, load_config
from ecg_dan.jobs.finetune import run_finetune
from ecg_dan.jobs.pretrain import run_pretrain
from ecg_dan.run_dir import RunDir


class _Payload:
    """Unpickling this calls Path.touch(marker): code execution from a checkpoint file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(tmp_path: Path, like: Path | None = None, name: str = "crafted.ckpt"
             ) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    ckpt = torch.load(like, map_location="cpu", weights_only=True) if like else {}
    ckpt["payload"] = _Payload(marker)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path, marker


def _args(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    return ["+tiny", f"data.root={root}", f"run_dir={tmp_path / 'run'}",
            "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", *extra]


def test_crafted_checkpoint_is_refused_at_every_entry_point(tmp_path, tiny_data_root,
                                                            tiny_pretrained, capsys):
    bad, marker = _crafted(tmp_path, like=tiny_pretrained)  # a real checkpoint plus a payload
    # finetune.ckpt
    code = cli(["finetune", "demo_finetune", *_args(tmp_path, tiny_data_root,
                                                     f"finetune.ckpt={bad}")])
    err = capsys.readouterr().err
    assert code == 2 and "was refused" in err and "weights-only" in err and str(bad) in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    # evaluate pretrain --ckpt
    assert cli(["evaluate", "pretrain", "--ckpt", str(bad)]) == 2
    assert "was refused" in capsys.readouterr().err
    # resume from a crafted last.ckpt in the run directory, and resume=<path>
    run = tmp_path / "pre"
    (run / "checkpoints").mkdir(parents=True)
    os.replace(_crafted(tmp_path, name="other.ckpt")[0], run / "checkpoints" / "last.ckpt")
    pre_args = _args(tmp_path, tiny_data_root, f"run_dir={run}")
    RunDir(run).write_record(load_config("demo_pretrain", pre_args))  # a run, not a folder
    assert cli(["pretrain", "demo_pretrain", *pre_args]) == 2
    assert "last.ckpt was refused" in capsys.readouterr().err
    assert cli(["pretrain", "demo_pretrain", *_args(tmp_path, tiny_data_root,
                                                    f"run_dir={tmp_path / 'r2'}",
                                                    f"resume={bad}")]) == 2
    assert "was refused" in capsys.readouterr().err
    assert not marker.exists()


def test_truncated_last_ckpt_names_the_file_and_how_to_start_over(tmp_path, tiny_data_root):
    cfg = load_config("demo_pretrain", _args(tmp_path, tiny_data_root))
    run_pretrain(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last.ckpt is truncated or corrupt.*"
                                              r"resume=never"):
        run_pretrain(cfg)


def test_full_disk_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.truncate(10)  # what a full disk leaves: a partial file, then ENOSPC
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1  # the old checkpoint, intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no tmp left


def test_rerun_with_another_config_is_refused_naming_the_keys(tmp_path, tiny_data_root):
    base = _args(tmp_path, tiny_data_root, "finetune.scratch=true", "finetune.n_boot=10")
    run_dir = run_finetune(load_config("demo_finetune", base))
    before = (run_dir / "results.json").read_text()
    changed = load_config("demo_finetune", [*base, "finetune.alpha=0.25", "finetune.seeds=[7]"])
    with pytest.raises(ConfigError, match=r"differing keys: finetune.alpha, finetune.seeds.*"
                                          r"resume=restart"):
        run_finetune(changed)
    assert (run_dir / "results.json").read_text() == before  # old results untouched
    assert load_config("demo_finetune", base).finetune.alpha == 0.5
    # logging-only differences resume; resume=restart moves the old run aside and retrains
    run_finetune(load_config("demo_finetune", [*base, "logging.tags=[x]"]))
    restarted = load_config("demo_finetune", [*base, "finetune.alpha=0.25",
                                              "resume=restart"])
    run_finetune(restarted)
    aside = list(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and (aside[0] / "results.json").read_text() == before
    assert "alpha: 0.25" in (run_dir / "config.yaml").read_text()


def test_finetune_checkpoint_given_to_evaluate_pretrain(tiny_cox_run, capsys):
    fin = next((tiny_cox_run / "seed42_fold0" / "checkpoints").glob("best-*.ckpt"))
    assert cli(["evaluate", "pretrain", "--ckpt", str(fin)]) == 2
    err = capsys.readouterr().err
    assert "expected a pretraining checkpoint" in err and "found a finetune checkpoint" in err


def test_config_errors_are_one_line_and_debug_shows_the_traceback(capsys):
    assert cli(["finetune", "finetune_hyp", "finetune.alpha=1.5"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("ecg-dan: config error: finetune.alpha=1.5 out of range: must be in "
                           "[0, 1]")
    with pytest.raises(ConfigError):
        cli(["--debug", "finetune", "finetune_hyp", "finetune.alpha=1.5"])


def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path):
    """Results are shared files: mkstemp's owner-only 0600 must not leak into them."""
    import stat

    from data_modules.atomic import atomic_dir, atomic_write_text

    old = os.umask(0o022)
    try:
        f = atomic_write_text(tmp_path / "table.md", "x")
        d = atomic_dir(tmp_path / "built", lambda p: (p / "a").write_text("y"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
