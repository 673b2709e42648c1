"""The portable model file of a finetuning run (``ecg-dan export``; read by ``ecg-dan predict``).

One safetensors file: no pickled object anywhere, so reading it cannot run code. It holds

- every fold model's weights (``m<i>.state.<key>``: the ensemble over folds x seeds, each the
  checkpoint that scored its held-out fold),
- each Cox fold model's out-of-fold recalibration (:mod:`ecg_dan.metrics.recalibration`,
  fitted on rows it did not train on): the calibrated baseline cumulative hazard
  (``m<i>.baseline_times`` / ``m<i>.baseline_cumhaz``) and, in the manifest's
  ``members[i]``, its ``offset`` and ``slope``, so its absolute risk is
  ``1 - exp(-H0(t) exp(slope (eta - offset)))`` and ``slope (eta - offset)`` is its risk on
  the scale shared by the fold models (a Cox log-risk is identified only up to a constant
  that differs from fold model to fold model); a logistic-hazard model is recalibrated the
  same way on its scalar risk (its own curves were badly calibrated early in follow-up) and
  also keeps its time cuts (``m<i>.cuts``, the width of its output layer),
- what percentiles and the flag are read against (:mod:`ecg_dan.reporting.risk_ranks`):
  each fold model's sorted held-out risks (``m<i>.heldout_risk``, as its run wrote them: a
  risk's rank among them is its normal score), the reference distribution of out-of-fold
  scores (``reference_risk``: per participant, the mean over seeds of the normal score by
  the fold model that did not train on them, sorted) and its high-risk threshold,
- a JSON manifest in the header's metadata: format and version, the resolved config, the
  model config, the preprocessing (sample rate, beat geometry, median-beat version,
  normalisation, lead order), the members, the threshold, the run's horizons, and a
  SHA-256 of the manifest and every tensor (name, dtype, shape, bytes).

Reading checks, in order, and refuses with :class:`ModelFileError` naming the file: a
safetensors header (a pickle or a torch zip is named as such and never unpickled), a file
as long as its header says (truncated), the format name and version, the content hash
(tampered or corrupt), the preprocessing this code applies, and the architecture (model
config keys this version knows; every tensor name and shape). The model id is the first 16
hex digits of the content hash: the same for the same run, whether read from a file or
exported from the run directory in memory (no time stamp is stored; safetensors itself
writes its header keys in no fixed order, so the file's own bytes may differ).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_modules.atomic import atomic_write_bytes
from data_modules.cache import SURVIVAL_KINDS, open_cache
from data_modules.errors import DataError
from data_modules.limits import LimitExceeded, check_file_size
from data_modules.signal.leads import BEAT_LEN, FS, LEADS, PAD, R_INDEX
from data_modules.signal.median_beat import MAX_ABS_MV
from data_modules.sources.ptbxl import MEDIAN_VERSION
from ecg_dan import __version__
from ecg_dan.checkpoints import read_checkpoint
from ecg_dan.config import ModelConfig, config_hash, model_config, saved_container
from ecg_dan.metrics.recalibration import CoxRecalibration
from ecg_dan.model_manifest import manifest_problem
from ecg_dan.reporting.absolute_models import fold_models
from ecg_dan.reporting.risk_ranks import rank_reference
from ecg_dan.run_dir import FoldFiles, RunDir, RunDirError

__all__ = ["FORMAT", "FORMAT_VERSION", "ModelContents", "ModelFileError", "check_manifest",
           "export_run", "model_bytes", "preprocessing", "read_model", "read_model_bytes"]

FORMAT = "ecg-dan-model"
FORMAT_VERSION = 2  # 2: recalibrated baselines and slopes (1: training-fold Breslow)
SUFFIX = ".safetensors"
_MAX_HEADER = 64 * 1024 * 1024  # a safetensors header of a few hundred models is < 1 MB


class ModelFileError(DataError):
    """A model file that cannot be used: not a model file, truncated, tampered, or from
    another format version, preprocessing or architecture."""


# How a CardioSoft XML file becomes a beat: "device" = the device median re-centred (UK
# Biobank runs were trained on those), "strip" = derived from the 10 s strip by the
# project's extraction (cohort caches derive every format's beat so; a model trained on one
# must see CardioSoft files the same way).
CARDIOSOFT_BEATS = ("device", "strip")


def cardiosoft_beat(cfg: Any) -> str:
    """The CardioSoft beat rule of a finetuning run's data: ``strip`` for a cohort cache
    (``data.cohort_cache`` of kind ``cohort``), ``device`` for UK Biobank."""
    cache = cfg.data.get("cohort_cache")
    if not cache:
        return "device"
    with open_cache(cache, SURVIVAL_KINDS) as f:
        return "device" if str(f.attrs["kind"]) == "ukb" else "strip"


def preprocessing(cardiosoft: str = "device") -> dict[str, Any]:
    """How this code turns an ECG into the network's input; a model file records the one
    its run was trained with, and a file whose record differs is refused. ``cardiosoft``:
    which CardioSoft beat the run's data used (:data:`CARDIOSOFT_BEATS`)."""
    if cardiosoft not in CARDIOSOFT_BEATS:
        raise ValueError(f"cardiosoft beat {cardiosoft!r}: expected one of {CARDIOSOFT_BEATS}")
    xml_rule = ("the device median re-centred by conform_beat" if cardiosoft == "device"
                else "median_beat of the 10 s strip, as every format of a cohort cache")
    return {
        "sample_rate_hz": FS,
        "beat_samples": BEAT_LEN,
        "r_index": R_INDEX,
        "pad_samples": PAD,
        "leads": list(LEADS),
        "median_version": MEDIAN_VERSION,
        "median_rule": "WFDB strips and GE MUSE XML: data_modules.signal.median_beat.median_beat "
                       f"(resampled to 500 Hz); CardioSoft XML: {xml_rule}",
        "cardiosoft_beat": cardiosoft,
        "normalisation": "per-record, per-lead z-score over the beat "
                         "(data_modules.loading.transforms.zscore_leads), zero-padded to 608",
        "max_abs_mv": MAX_ABS_MV,
    }


@dataclass
class ModelContents:
    """A checked model file: its manifest, tensors and id (from its content hash)."""

    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    model_id: str
    source: str

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        prefix = f"m{i}.state."
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------- export
def _content_digest(tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest (without this digest) and of every tensor's name, dtype,
    shape and bytes: any change to the weights, baselines, reference or metadata shows."""
    h = hashlib.sha256()
    rest = {k: v for k, v in manifest.items() if k != "content_sha256"}
    h.update(json.dumps(rest, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _fold_checkpoint(ff: FoldFiles, want_hash: str) -> Path:
    """The checkpoint that scored one held-out fold (its sidecar names it; made by this
    config)."""
    try:
        return ff.checkpoint(want_hash)
    except RunDirError as e:
        raise ModelFileError(str(e)) from None


def model_bytes(run_dir: str | os.PathLike) -> bytes:
    """The model file of a finished finetuning run, as bytes (see the module docstring)."""
    from safetensors.torch import save

    rd = RunDir(run_dir)
    run_dir = rd.path
    try:
        cfg = rd.load_config()
    except RunDirError as e:
        raise ModelFileError(str(e)) from None
    if cfg.task == "cox_baseline":
        raise ModelFileError(f"{run_dir} is a task=cox_baseline run: a Cox model on tabular "
                             "features, not an ECG network; there is nothing to export for "
                             "`ecg-dan predict`")
    if cfg.task != "finetune":
        raise ModelFileError(f"{run_dir} is a task={cfg.task} run; export takes a finetuning "
                             "run (task=finetune)")
    try:
        folds = fold_models(rd)
    except RunDirError as e:
        raise ModelFileError(str(e)) from None
    objective = str(cfg.finetune.objective)
    want = config_hash(cfg)
    tensors: dict[str, torch.Tensor] = {}
    members: list[dict[str, Any]] = []
    for i, f in enumerate(folds):
        test, (seed, fold) = f.test, f.key
        ff = rd.fold(seed, fold)
        ckpt_path = _fold_checkpoint(ff, want)
        ckpt = read_checkpoint(ckpt_path, kind="finetune")
        for k, v in ckpt["state_dict"].items():
            tensors[f"m{i}.state.{k}"] = v.detach().cpu().clone().contiguous()
        where = ckpt_path.resolve()
        member: dict[str, Any] = {"seed": seed, "fold": fold, "n_test": len(test),
                                  "checkpoint": str(where.relative_to(run_dir.resolve())
                                                    if where.is_relative_to(run_dir.resolve())
                                                    else ckpt_path.name)}
        cal = f.model
        if not isinstance(cal, CoxRecalibration):
            raise ModelFileError(f"{ff.train_csv} or {rd.splits_path}: missing; the "
                                 f"absolute risk of fold model seed {seed} fold {fold} "
                                 "needs its training-fold risks and validation rows")
        tensors[f"m{i}.baseline_times"] = torch.from_numpy(cal.baseline.times.astype(np.float64))
        tensors[f"m{i}.baseline_cumhaz"] = torch.from_numpy(
            cal.baseline.cumhaz_values.astype(np.float64))
        member.update(offset=cal.offset, slope=cal.slope, slope_fitted=cal.slope_fitted,
                      calibration_n=cal.n, calibration_events=cal.events,
                      max_train_time=cal.max_time)
        if objective != "cox":  # a discrete-time head: its cuts make its output layer
            cuts = (ckpt.get("hyper_parameters") or {}).get("cuts")
            if not cuts:
                raise ModelFileError(f"{ckpt_path}: a logistic-hazard checkpoint without its "
                                     "time cuts")
            tensors[f"m{i}.cuts"] = torch.tensor(cuts, dtype=torch.float64)
        members.append(member)
    top = float(cfg.finetune.top_fraction)
    ref = rank_reference(folds, top)
    tensors["reference_risk"] = torch.from_numpy(ref["risk"])
    for i, member_ref in enumerate(ref["members"]):
        tensors[f"m{i}.heldout_risk"] = torch.from_numpy(member_ref)
    mc = model_config(cfg)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ecg_dan_version": __version__,
        "run": {"name": str(cfg.name), "config_hash": want, "cohort": str(cfg.finetune.cohort),
                "objective": objective, "time_unit": str(cfg.data.time_unit),
                "top_fraction": top, "horizons": [float(h) for h in cfg.finetune.horizons]},
        "config": saved_container(cfg),
        "model_config": {f.name: getattr(mc, f.name) for f in fields(mc)},
        "preprocessing": preprocessing(cardiosoft_beat(cfg)),
        "members": members,
        "reference": {"what": "per participant, the mean over seeds of the normal score of "
                              "their risk within the held-out risks of the fold model that "
                              "did not train on them (ecg_dan.reporting.risk_ranks)",
                      "n": int(ref["risk"].size),
                      # the run's Kaplan-Meier grouping: score >= the (1 - top) quantile
                      "high_risk_threshold": ref["threshold"]},
    }
    manifest["content_sha256"] = _content_digest(tensors, manifest)
    return save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                   "manifest": json.dumps(manifest, sort_keys=True)})


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> ModelContents:
    """Write the model file of ``run_dir`` to ``out`` (atomically) and return it as read
    back (so what was written is known to load)."""
    data = model_bytes(run_dir)
    atomic_write_bytes(out, data)
    return read_model(out)


# --------------------------------------------------------------------------- read
def _header(data: bytes, src: str) -> tuple[dict[str, Any], int]:
    if len(data) < 9:
        raise ModelFileError(f"{src}: {len(data)} bytes: empty or truncated, not an ecg-dan "
                             "model file")
    n = int.from_bytes(data[:8], "little")
    if data[8:9] != b"{" or n > _MAX_HEADER:  # not a safetensors header
        if data[:4] == b"PK\x03\x04":
            what = "a zip archive (a torch checkpoint?)"
        elif data[:1] == b"\x80" and 2 <= data[1] <= 5:
            what = "a Python pickle"
        else:
            what = "not a safetensors file"
        raise ModelFileError(f"{src} is not an ecg-dan model file: {what}; it was refused "
                             "without being unpickled (pickles can run code)")
    if n > len(data) - 8:
        raise ModelFileError(f"{src} is truncated: its header alone needs {n + 8} bytes, the "
                             f"file has {len(data)}")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{src}: corrupt header ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{src} is not an ecg-dan model file (header is not a table)")
    return header, n


def _check_layout(header: dict[str, Any], n: int, size: int, src: str) -> dict[str, str]:
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{src} is a safetensors file but not an ecg-dan model file "
                             f"(metadata format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ModelFileError(f"{src}: format_version {meta.get('format_version')!r} is not "
                             "an integer") from None
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{src} is model file format version {version}; this ecg-dan "
                             f"reads version {FORMAT_VERSION}: export the run again with this "
                             "version, or score with the ecg-dan that wrote it")
    end = max((v["data_offsets"][1] for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v),
              default=0)
    if 8 + n + end > size:
        raise ModelFileError(f"{src} is truncated: {size} bytes, its header describes "
                             f"{8 + n + end}")
    if 8 + n + end < size:
        raise ModelFileError(f"{src} has {size - 8 - n - end} bytes beyond its tensors "
                             "(tampered or not written by ecg-dan)")
    return meta


def _diff(name: str, have: Any, want: Any) -> list[str]:
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for k in sorted(set(have) | set(want)):
            out += _diff(f"{name}.{k}", have.get(k, "<absent>"), want.get(k, "<absent>"))
        return out
    return [] if have == want else [f"{name}: file {have!r} vs this code {want!r}"]


def _check_architecture(manifest: dict[str, Any], src: str) -> None:
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(manifest["model_config"]) - known)
    missing = sorted(known - set(manifest["model_config"]))
    if unknown or missing:
        detail = [f"model.{k} (unknown to this version)" for k in unknown]
        detail += [f"model.{k} (absent from the file)" for k in missing]
        raise ModelFileError(f"{src} describes another architecture: {', '.join(detail)}")


def read_model_bytes(data: bytes, source: str = "<bytes>") -> ModelContents:
    """Check and decode a model file's bytes (see the module docstring for the checks)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    header, n = _header(data, source)
    meta = _check_layout(header, n, len(data), source)
    try:
        manifest = json.loads(meta["manifest"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{source}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise ModelFileError(f"{source}: corrupt manifest (not a table)")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{source}: corrupt tensors ({e})") from None
    if _content_digest(tensors, manifest) != manifest.get("content_sha256"):
        raise ModelFileError(f"{source}: the content does not match the hash recorded in the "
                             "file: it was tampered with or is corrupt")
    problem = manifest_problem(manifest, tensors)
    if problem:
        raise ModelFileError(f"{source}: malformed model file: {problem}")
    check_manifest(manifest, source)
    return ModelContents(manifest, tensors, str(manifest["content_sha256"])[:16], source)


def check_manifest(manifest: dict[str, Any], source: str) -> None:
    """The checks of a model's manifest shared by both file formats (this one and
    :mod:`ecg_dan.onnx_model`): the preprocessing this code applies, the architecture."""
    have = dict(manifest.get("preprocessing", {}))
    if "cardiosoft_beat" not in have:  # files written before the rule was recorded: device
        have["cardiosoft_beat"] = "device"
        have["median_rule"] = preprocessing("device")["median_rule"]
    rule = have["cardiosoft_beat"]
    want = preprocessing(rule if rule in CARDIOSOFT_BEATS else "device")
    diff = _diff("preprocessing", have, want)
    if diff:
        raise ModelFileError(f"{source} was trained with another preprocessing than this code "
                             f"applies: {'; '.join(diff)}")
    _check_architecture(manifest, source)


def read_model(path: str | os.PathLike) -> ModelContents:
    """Read and check a model file (:class:`ModelFileError` naming it when refused)."""
    return read_model_bytes(checked_model_path(path).read_bytes(), str(path))


def checked_model_path(path: str | os.PathLike) -> Path:
    """``path`` if it is a file within the model-file size limit (checked before the file is
    read whole, :mod:`data_modules.limits`), else :class:`ModelFileError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        check_file_size(path, "MODEL_MB", str(path))
    except LimitExceeded as e:
        raise ModelFileError(e.reason) from None
    return path
