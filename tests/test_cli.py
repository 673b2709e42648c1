"""The installed program as a user runs it: the ``ecg-dan`` executable, a ``make`` target (as a
2-process DDP run), ``synth``/``cache``/``info``/``demo`` through the CLI, and a wheel installed
(not editable) into a fresh environment running the demo from another directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import h5py
import pandas as pd
import pytest

from ecg_dan.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _exe() -> str:
    exe = Path(sys.executable).parent / "ecg-dan"
    if not exe.is_file():
        pytest.skip(f"no installed ecg-dan executable beside {sys.executable}")
    return str(exe)


HEAVY = ("torch", "lightning", "pandas", "scipy", "h5py", "onnx", "onnxruntime")


@pytest.mark.parametrize("argv", [["--help"], ["finetune", "--help"], ["predict", "--help"]])
def test_help_is_fast_and_imports_neither_torch_nor_lightning(argv):
    """The CLI defers its heavy imports into the commands: help costs well under a second."""
    code = ("import sys\nfrom ecg_dan.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(REPO), ENV.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: ecg-dan" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
    mod = subprocess.run([sys.executable, "-m", "ecg_dan", *argv], capture_output=True,
                         text=True, timeout=120, env=env, cwd=REPO)
    assert mod.returncode == 0 and "usage: ecg-dan" in mod.stdout, mod.stderr[-2000:]


def test_rank_zero_without_lightning_follows_the_launcher(monkeypatch):
    """Before Lightning sets the rank, the log follows Lightning's environment rule."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    from ecg_dan.log import is_rank_zero

    monkeypatch.delattr(rank_zero_only, "rank", raising=False)
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_rank_zero()
    monkeypatch.setattr(rank_zero_only, "rank", 0, raising=False)  # Lightning's, once set
    assert is_rank_zero()


def test_info_prints_the_paper_parameter_counts(capsys):
    """In this process: the installed executable runs in the next test (and the wheel's in
    the demo test); one more interpreter importing torch and Lightning proves nothing new."""
    assert cli(["info"]) == 0
    out = capsys.readouterr().out
    for line in ("| encoder | 1,274,536 |", "| decoder | 110,570 |",
                 "| encoder without cross-lead attention | 162,200 |",
                 "| encoder without temporal attention | 1,235,176 |",
                 "| encoder without either | 122,840 |", "| risk head | 2,573 |"):
        assert line in out, line
    assert "registered models: ecg_dan" in out


def test_installed_executable_user_error_is_one_line(tmp_path):
    proc = subprocess.run([_exe(), "finetune", "finetune_hyp", "finetune.val_fraction=0"],
                          capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ecg-dan: config error: finetune.val_fraction=0.0 out of range: must be in (0, 1)"]


def test_synth_then_cache_through_the_cli(tmp_path, capsys):
    assert cli(["synth", "--out", str(tmp_path / "syn"), "--n", "60", "--seed", "3",
                "--events", "dense"]) == 0
    out = capsys.readouterr().out
    assert "ukb_outcomes:" in out and (tmp_path / "syn" / "ptbxl" / "ptbxl_database.csv").is_file()
    assert cli(["cache", "ptbxl", "--root", str(tmp_path / "syn" / "ptbxl"),
                "--out", str(tmp_path / "p.h5"), "--workers", "1"]) == 0
    assert cli(["cache", "ukb", "--xml-dir", str(tmp_path / "syn" / "ukb" / "xml"),
                "--outcomes", str(tmp_path / "syn" / "ukb" / "outcomes.csv"),
                "--out", str(tmp_path / "u.h5"), "--workers", "1", "--strips", "500"]) == 0
    with h5py.File(tmp_path / "p.h5", "r") as p, h5py.File(tmp_path / "u.h5", "r") as u:
        assert p["median"].shape == (60, 12, 600)
        assert u["median"].shape[1:] == (12, 600) and u["median"].shape[0] >= 50
        assert u["strip"].shape == (u["median"].shape[0], 12, 5000)


def test_make_target_runs_as_a_subprocess_under_two_process_ddp(tmp_path, tiny_data_root):
    """``make finetune`` as a user runs it, here as a 2-process gloo DDP run (+ddp_cpu):
    Lightning re-launches the target's module for the second rank, the ranks' predictions
    are gathered once each and rank 0 alone logs. One subprocess world checks both (the
    target and DDP through an entry point), paying the interpreter and imports once. Without
    make or the repository's .venv the target's own command runs instead."""
    make = shutil.which("make")
    run = tmp_path / "run"
    args = ["finetune", "DATA=synthetic", "SCRATCH=1"]
    extra = (f"+tiny data.root={tiny_data_root} run_dir={run} trainer.limit_train_batches=1 "
             "trainer.limit_val_batches=1 finetune.n_boot=10 +ddp_cpu")
    if make is not None and (REPO / "Makefile").is_file() and (REPO / ".venv").is_dir():
        cmd = [make, "-s", "-o", "install", *args, f"ARGS={extra}"]
    else:  # what the Makefile's finetune target runs
        cmd = [sys.executable, "-m", "ecg_dan.make_targets", *args, "--", *extra.split()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run / "results.md").is_file() and (run / "kaplan_meier.png").is_file()
    assert "name: finetune_hyp_scratch_synthetic" in (run / "config.yaml").read_text()
    assert "strategy=ddp" in proc.stderr or "distributed_backend=gloo" in proc.stderr
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert oof.eid.is_unique and len(oof) > 0  # ranks' predictions gathered, none repeated
    # one copy of each message (rank-zero logger), not one per rank
    assert proc.stdout.count("held-out fold scored once") == 2


def test_wheel_installs_and_runs_the_demo_from_another_directory(tmp_path, tiny_data_root):
    """``pip install .`` (not editable) into a fresh environment: configs and resources
    come from the wheel's package data, the demo runs from an unrelated directory."""
    pip = [sys.executable, "-m", "pip"]
    dist = tmp_path / "dist"
    build = subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(dist), str(REPO)], capture_output=True, text=True,
                           timeout=600, env=ENV)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("ecg_dan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ecg_dan/experiments/demo_finetune.yaml" in names
    assert "ecg_dan/experiments/overlays/tiny.yaml" in names
    assert "data_modules/resources/scp_statements.csv" in names
    # a fresh venv whose dependencies come from this one's site-packages (a path entry, so
    # the editable install's finder is not activated there), the wheel installed into it
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig;print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    inst = subprocess.run([*pip, "--python", str(vpy), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True,
                          timeout=600, env=ENV)
    assert inst.returncode == 0, inst.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(vpy), "-c", "import ecg_dan;print(ecg_dan.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=ENV)
    assert str(venv) in where.stdout, where.stdout + where.stderr  # the wheel, not the repo
    demo = subprocess.run(
        [str(venv / "bin" / "ecg-dan"), "demo", "+tiny", f"data.root={tiny_data_root}",
         "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"],
        capture_output=True, text=True, timeout=900, cwd=elsewhere,
        env={k: v for k, v in ENV.items() if k != "ECG_DAN_EXPERIMENTS"})
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert (elsewhere / "runs" / "demo_finetune" / "results.md").is_file()
    assert "demo finished" in demo.stdout


def test_synth_format_choices_match_the_registry():
    from data_modules.synthetic.formats import FORMATS
    from ecg_dan.cli import SYNTH_FORMATS

    assert tuple(FORMATS) == SYNTH_FORMATS


def test_every_subcommand_formats_its_help():
    """argparse %-formats help strings: a bare '%' (CODE-15%) breaks --help of that command."""
    import argparse

    from ecg_dan.cli import build_parser

    def walk(p: argparse.ArgumentParser, path: list[str]):
        p.format_help()
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield [*path, name]
                    yield from walk(sub, [*path, name])

    seen = list(walk(build_parser(), []))
    assert ["cache", "code15"] in seen and ["cache", "merge"] in seen


def test_synth_n_ukb_with_another_format_is_one_line(capsys):
    from ecg_dan.cli import main

    assert main(["synth", "--out", "unused", "--format", "muse", "--n-ukb", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--n-ukb" in err[0] and "--format muse" in err[0]
