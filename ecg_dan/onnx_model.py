"""The ONNX model file of a finetuning run (``ecg-dan export --format onnx``; read by
``ecg-dan predict --model x.onnx`` and by ONNX Runtime in any language: docs/deployment.md).

One ONNX file: a graph of every fold model's encoder and risk head (no decoder) in one
input and one output, and everything else the safetensors model file
(:mod:`ecg_dan.model_file`) holds, in the model's ``metadata_props``:

- input ``beats``: (batch, 12, 608) float32, the median beats as
  :meth:`ecg_dan.predict.EnsembleModel.prepare` makes them (per-lead z-score, zero padding);
  output ``log_risk``: (batch, M) float32, each fold model's raw log-risk (as its run wrote
  it; the post-processing to the columns of ``predict`` is the same numpy code as the
  PyTorch path's, :class:`ecg_dan.predict.EnsembleModel`);
- ``ecg_dan_format`` / ``ecg_dan_format_version``: this format (:data:`FORMAT`);
- ``ecg_dan_manifest``: the safetensors file's manifest (JSON, unchanged: preprocessing,
  members' seeds, folds, recalibration ``offset``/``slope``, run horizons, threshold, and
  ``content_sha256``, whose first 16 hex digits are the model id: the same id as the
  safetensors file and the run directory give, as the risks are the same);
- ``ecg_dan_tables``: the model file's tensors other than weights (JSON: name -> dtype,
  shape, values): ``reference_risk``, per member ``m<i>.heldout_risk``,
  ``m<i>.baseline_times``, ``m<i>.baseline_cumhaz`` and, for a logistic-hazard head,
  ``m<i>.cuts``;
- ``ecg_dan_sha256``, written last: the SHA-256 of every byte of the file before it. The
  file ends with this one metadata entry (a fixed :data:`TAIL_LEN` bytes, appended as a
  protobuf repeated field), so any language checks it by hashing all but the last
  :data:`TAIL_LEN` bytes.

Reading (:func:`read_onnx`) refuses with :class:`ecg_dan.model_file.ModelFileError` naming
the file: not ONNX (a safetensors model file is named as such), no ecg-dan manifest,
truncated (the hash entry is not at the end), tampered (hash mismatch), another format
version or preprocessing (the checks of the safetensors file,
:func:`ecg_dan.model_file.check_manifest`), a graph ONNX Runtime cannot load or whose
input/output is not the one above. ``onnx`` and ``onnxruntime`` are imported only here,
and only when a function needs them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ecg_dan.model_file import FORMAT_VERSION as MODEL_FORMAT_VERSION
from ecg_dan.model_file import ModelContents, ModelFileError, check_manifest, checked_model_path

__all__ = ["FORMAT", "FORMAT_VERSION", "INPUT", "OUTPUT", "OnnxRunner", "OnnxSession",
           "onnx_file_bytes", "ort_session", "read_onnx"]

FORMAT = "ecg-dan-onnx"
FORMAT_VERSION = 1
INPUT, OUTPUT = "beats", "log_risk"
SUFFIX = ".onnx"
_HASH_KEY = "ecg_dan_sha256"


def _entry(key: str, value: str) -> bytes:
    """One ``metadata_props`` entry (ModelProto field 14) as serialised bytes: appended to a
    serialised model, protobuf reads it as one more entry of the repeated field."""
    import onnx  # deferred: onnx, only for ONNX files

    m = onnx.ModelProto()
    e = m.metadata_props.add()
    e.key, e.value = key, value
    return m.SerializeToString()


TAIL_LEN = 2 + 2 + len(_HASH_KEY) + 2 + 64  # tag+len of the entry, of its key, of its value


def _tables(contents: ModelContents) -> dict[str, Any]:
    """Every non-weight tensor of a model file, as JSON-ready lists (float64 values repr
    round-trip exactly)."""
    return {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape),
                "values": v.reshape(-1).tolist()}
            for k, v in sorted(contents.tensors.items()) if ".state." not in k}


def onnx_file_bytes(graph: bytes, contents: ModelContents) -> bytes:
    """The ONNX model file: ``graph`` (a serialised ONNX model of the fold models, input
    :data:`INPUT`, output :data:`OUTPUT`) with the model's manifest and tables in its
    metadata and the hash of it all at its end (module docstring)."""
    import onnx  # deferred: onnx, only for ONNX files

    model = onnx.load_from_string(graph)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {
        "ecg_dan_format": FORMAT, "ecg_dan_format_version": str(FORMAT_VERSION),
        "ecg_dan_manifest": json.dumps(contents.manifest, sort_keys=True),
        "ecg_dan_tables": json.dumps(_tables(contents))})
    model.producer_name = "ecg-dan"
    body = model.SerializeToString()
    tail = _entry(_HASH_KEY, hashlib.sha256(body).hexdigest())
    assert len(tail) == TAIL_LEN, len(tail)
    return body + tail


@dataclass
class OnnxSession:
    """A checked ONNX model file: its contents (manifest, non-weight tensors, id) and the
    bytes of its graph for ONNX Runtime."""

    contents: ModelContents
    data: bytes
    sha256: str  # the file's own hash (its last metadata entry)


def _refuse_safetensors(data: bytes, src: str) -> None:
    n = int.from_bytes(data[:8], "little") if len(data) >= 9 else 0
    if data[8:9] == b"{" and 0 < n < len(data):
        raise ModelFileError(f"{src} is a safetensors file, not an ONNX file: name it "
                             "*.safetensors to score it with PyTorch")


def _tensor(name: str, t: Any, src: str) -> torch.Tensor:
    try:
        a = np.asarray(t["values"], dtype=np.dtype(t["dtype"])).reshape(t["shape"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{src}: corrupt table {name} ({e})") from None
    return torch.from_numpy(a)


def read_onnx_bytes(data: bytes, source: str = "<bytes>") -> OnnxSession:
    """Check and decode an ONNX model file's bytes (module docstring: the checks)."""
    import onnx  # deferred: onnx, only for ONNX files
    from google.protobuf.message import DecodeError

    if len(data) <= TAIL_LEN:
        raise ModelFileError(f"{source}: {len(data)} bytes: empty or truncated, not an "
                             "ecg-dan ONNX file")
    _refuse_safetensors(data, source)
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{source} is not an ONNX file, or is corrupt or truncated "
                             f"({type(e).__name__}: {e})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if "ecg_dan_manifest" not in props or props.get("ecg_dan_format") != FORMAT:
        if not model.HasField("graph"):
            raise ModelFileError(f"{source} is not an ONNX file, or is corrupt or truncated "
                                 "(no graph)")
        raise ModelFileError(f"{source} is an ONNX file without an ecg-dan manifest: not "
                             "written by `ecg-dan export --format onnx` (or truncated)")
    digest = props.get(_HASH_KEY, "")
    if len(digest) != 64 or data[-TAIL_LEN:] != _entry(_HASH_KEY, digest):
        raise ModelFileError(f"{source} is truncated or was rewritten: its content hash is "
                             "not its last entry")
    if hashlib.sha256(data[:-TAIL_LEN]).hexdigest() != digest:
        raise ModelFileError(f"{source}: the content does not match the hash recorded in the "
                             "file: it was tampered with or is corrupt")
    try:
        version = int(props.get("ecg_dan_format_version", ""))
    except ValueError:
        version = -1
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{source} is ecg-dan ONNX format version "
                             f"{props.get('ecg_dan_format_version')!r}; this ecg-dan reads "
                             f"version {FORMAT_VERSION}: export the run again")
    try:
        manifest = json.loads(props["ecg_dan_manifest"])
        tables = json.loads(props.get("ecg_dan_tables", "{}"))
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{source}: corrupt manifest ({e})") from None
    if manifest.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{source} holds a model of format version "
                             f"{manifest.get('format_version')!r}; this ecg-dan reads version "
                             f"{MODEL_FORMAT_VERSION}: export the run again")
    check_manifest(manifest, source)
    tensors = {k: _tensor(k, v, source) for k, v in tables.items()}
    need = ["reference_risk"] + [f"m{i}.{k}" for i in range(len(manifest["members"]))
                                 for k in ("heldout_risk", "baseline_times", "baseline_cumhaz")]
    missing = [k for k in need if k not in tensors]
    if missing:
        raise ModelFileError(f"{source}: tables {missing[:3]} missing from ecg_dan_tables")
    contents = ModelContents(manifest, tensors, str(manifest["content_sha256"])[:16], source)
    return OnnxSession(contents, data, digest)


def read_onnx(path: str | os.PathLike) -> OnnxSession:
    """Read and check an ONNX model file (:class:`ModelFileError` naming it when refused)."""
    return read_onnx_bytes(checked_model_path(path).read_bytes(), str(path))


def ort_session(model: bytes | str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session of a serialised ONNX model (bytes or a path) on
    ``threads`` intra-op threads (None: ONNX Runtime's default, one per physical core), one
    inter-op thread, all graph optimisations."""
    import onnxruntime as ort  # deferred: onnxruntime, only to run ONNX files

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or 0)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: its warnings are not the user's business
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])


class OnnxRunner:
    """The fold models of an ONNX model file in ONNX Runtime: prepared beats (B, 12, 608)
    -> each fold model's log-risk (M, B) float64, as
    :meth:`ecg_dan.predict.EnsembleModel.member_risks` gives it from PyTorch."""

    def __init__(self, checked: OnnxSession, threads: int | None = None) -> None:
        src = checked.contents.source
        n_members = len(checked.contents.manifest["members"])
        try:
            self.session = ort_session(checked.data, threads)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own error types
            raise ModelFileError(f"{src}: ONNX Runtime cannot load its graph "
                                 f"({type(e).__name__}: {e})") from None
        ins = [(i.name, i.shape) for i in self.session.get_inputs()]
        outs = [(o.name, o.shape) for o in self.session.get_outputs()]
        if [n for n, _ in ins] != [INPUT] or [n for n, _ in outs] != [OUTPUT] \
                or list(ins[0][1][1:]) != [12, 608] or outs[0][1][1] != n_members:
            raise ModelFileError(f"{src}: graph inputs {ins} and outputs {outs}; expected "
                                 f"{INPUT} (batch, 12, 608) and {OUTPUT} (batch, "
                                 f"{n_members})")

    def __call__(self, x: NDArray | torch.Tensor) -> NDArray:
        a = x.numpy() if isinstance(x, torch.Tensor) else x
        out = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(a, dtype=np.float32)})
        return out[0].T.astype(np.float64)
