"""``ecg-dan export --format onnx``: a finetuning run's fold models as one ONNX graph (file
format: :mod:`ecg_dan.onnx_model`), and :func:`module_to_onnx` for any single-input module
(the benchmarks export a bare backbone with it).

The graph is traced with PyTorch's TorchScript-based exporter (``dynamo=False``, opset
:data:`OPSET`): it needs no ``onnxscript``, handles the attention blocks, and takes about
a CPU second per fold model. It is traced with autograd on: without it, an eval-mode
``nn.MultiheadAttention`` (the cross-lead branch) takes PyTorch's fused
``_native_multi_head_attention``, which has no ONNX form. Before the file is written,
ONNX Runtime's risks are compared with PyTorch's on a few beats (batches of 1 and 3): an
export that does not reproduce the model within :data:`EXPORT_TOLERANCE` (absolute for
log-risks up to 1 in magnitude, relative beyond: both run in float32, with sums in another
order, ~1e-6 apart on a trained model) is refused.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_modules.atomic import atomic_write_bytes
from data_modules.signal.leads import BEAT_LEN, N_LEADS
from ecg_dan.model_file import (
    ModelContents,
    ModelFileError,
    model_bytes,
    read_model,
    read_model_bytes,
)
from ecg_dan.onnx_model import (
    INPUT,
    OUTPUT,
    OnnxRunner,
    OnnxSession,
    onnx_file_bytes,
    read_onnx_bytes,
)
from ecg_dan.predict import EnsembleModel, fold_head

__all__ = ["EXPORT_TOLERANCE", "OPSET", "export_onnx", "module_to_onnx"]

OPSET = 17  # ONNX Runtime >= 1.12 and every maintained ONNX runtime read it
EXPORT_TOLERANCE = 1e-5  # largest |log-risk| difference / max(1, |log-risk|) at export


class FoldRisks(nn.Module):
    """Every fold model's raw log-risk, (B, 12, 608) -> (B, M): what the ONNX graph holds."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.objective.risk(fold_head(m, x)) for m in self.folds], dim=1)


def module_to_onnx(module: nn.Module, example: torch.Tensor, input_name: str = INPUT,
                   output_name: str = OUTPUT, opset: int = OPSET) -> bytes:
    """A serialised ONNX model of ``module`` (eval mode, one tensor in, one tensor out) with
    a dynamic first (batch) axis, traced on ``example``. Run it with
    :func:`ecg_dan.onnx_model.ort_session`."""
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.enable_grad():  # see the module docstring
        # the exporter's deprecation notice and the model's shape checks (constants in the
        # trace: the graph takes (batch, 12, 608) only) are not the user's business
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=opset,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
    return buf.getvalue()


def _contents(source: Path) -> ModelContents:
    """A run directory's model (exported in memory), or a safetensors model file's."""
    if source.is_dir():
        return read_model_bytes(model_bytes(source), str(source))
    return read_model(source)


def _check_agreement(model: EnsembleModel, runner: OnnxRunner, out: Path) -> float:
    """Largest log-risk difference (relative beyond 1), ONNX Runtime vs PyTorch, on batches
    of 1 and 3 synthetic beats (refused beyond :data:`EXPORT_TOLERANCE`)."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for n in (1, 3):
        beats = rng.normal(0.0, 0.3, (n, N_LEADS, BEAT_LEN)).astype(np.float32)
        want = model.member_risks(beats)
        got = runner(model.prepare(beats))
        worst = max(worst, float((np.abs(got - want) / np.maximum(1.0, np.abs(want))).max()))
    if not worst <= EXPORT_TOLERANCE:
        raise ModelFileError(f"{out}: not written: ONNX Runtime's log-risks differ from "
                             f"PyTorch's by {worst:.2e} (> {EXPORT_TOLERANCE:g})")
    return worst


def export_onnx(source: str | os.PathLike, out: str | os.PathLike) -> OnnxSession:
    """Write the ONNX model file of a finetuning run directory or of a safetensors model
    file to ``out`` (atomically, after checking ONNX Runtime reproduces PyTorch) and return
    it as read back."""
    source, out = Path(source), Path(out)
    contents = _contents(source)
    model = EnsembleModel(contents)
    beats = np.random.default_rng(1).normal(0.0, 0.3, (2, N_LEADS, BEAT_LEN))
    example = model.prepare(beats.astype(np.float32))
    graph = module_to_onnx(FoldRisks([m.module for m in model.members]), example)
    data = onnx_file_bytes(graph, contents)
    checked = read_onnx_bytes(data, str(out))
    _check_agreement(model, OnnxRunner(checked, torch.get_num_threads()), out)
    atomic_write_bytes(out, data)
    return checked

