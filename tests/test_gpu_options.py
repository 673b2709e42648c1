"""GPU-ready options, checked on the CPU: bf16 autocast, torch.compile wiring, pinned memory,
batch finishing on the batch's device. (No GPU is lent to this project's CI.)"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from data_modules.loading.transforms import finish_batch
from ecg_dan.models import ECGDAN, ModelConfig
from ecg_dan.trainer import maybe_compile, resolve_precision


def test_bf16_autocast_forward_runs_on_cpu_and_is_close() -> None:
    torch.manual_seed(0)
    model = ECGDAN(ModelConfig()).train()  # batch statistics, as in bf16-mixed training
    x = torch.randn(8, 12, 608)
    with torch.no_grad():
        torch.manual_seed(1)  # the same dropout masks in both passes
        ref = model(x)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    # bf16 keeps ~3 significant digits: z within 2%; the reconstruction of an UNTRAINED
    # decoder is nearly constant per lead before its instance norm (std ~1e-3 of the mean),
    # so the norm amplifies the rounding: 8% measured here, bounded at 15%.
    for key, bound in (("z", 0.02), ("recon", 0.15)):
        assert torch.isfinite(low[key]).all()
        err = (low[key].float() - ref[key]).norm() / ref[key].norm()
        assert err < bound, (key, float(err))
    assert resolve_precision("auto", "gpu") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"


def test_compile_option_is_wired_without_compiling(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: calls.append(self))
    module = SimpleNamespace(backbone=torch.nn.Linear(2, 2))
    maybe_compile(module, SimpleNamespace(trainer=SimpleNamespace(compile=False)))
    assert calls == []
    maybe_compile(module, SimpleNamespace(trainer=SimpleNamespace(compile=True)))
    assert calls == [module.backbone]


def test_finish_batch_stays_on_the_batch_device_and_dtype() -> None:
    raw = {"median": torch.randn(3, 12, 600, dtype=torch.float64),
           "lead_mask": torch.ones(3, 12, dtype=torch.bool)}
    out = finish_batch(raw)
    assert out["x"].device == raw["median"].device and out["x"].dtype == torch.float32
    if torch.cuda.is_available():  # exercised where a GPU exists
        dev = {k: v.cuda(non_blocking=True) for k, v in raw.items()}
        got = finish_batch(dev)
        assert got["x"].is_cuda
        torch.testing.assert_close(got["x"].cpu(), out["x"], rtol=0, atol=1e-6)


def test_pinned_memory_follows_cuda_by_default(tmp_path) -> None:
    from data_modules.loading.ptbxl_datamodule import PTBXLDataModule
    from tests.test_datamodules import write_ptbxl_cache

    path = write_ptbxl_cache(tmp_path / "p.h5", n=20)
    assert PTBXLDataModule(path, batch_size=4).pin_memory == torch.cuda.is_available()
    dm = PTBXLDataModule(path, batch_size=4, pin_memory=True)
    assert dm.train_dataloader().pin_memory
