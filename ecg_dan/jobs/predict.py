"""Jobs: ``ecg-dan export`` (a run -> one model file) and ``ecg-dan predict`` (a model file or
run -> scores of new ECGs; the API is :mod:`ecg_dan.predict`).

Predict reads the inputs in ``workers`` processes (median beats are the slow part), scores
them in batches in the main process, and writes, atomically:

- ``--out`` (CSV) and the same rows as JSON beside it (``.json``, with the model's
  description and the horizons): ``id`` (unique: a file's path below the folder given
  without extension, a file given alone: its name without extension, a cache row: its
  ecg_id / eid; :func:`data_modules.sources.files.discover`), ``source``, ``log_risk``
  (mean over the fold models of their risk on a shared scale, :mod:`ecg_dan.predict`),
  ``log_risk_std`` (their spread),
  ``n_models`` (the fold models that scored it), ``out_of_fold`` (True for a participant of
  the run's own cohort scored, from the run directory, by the fold models that held them out
  only), ``percentile`` (within the run's out-of-fold risks), ``risk@<h>`` (absolute risk of
  the event by each horizon, in the run's time unit: the run's own horizons unless
  ``horizons`` says otherwise, the same as its calibration table), ``high_risk`` (at the
  run's top-``finetune.top_fraction`` threshold) and ``model_id``;
- when an input is a survival cache (kind ukb or cohort, e.g. SaMi-Trop scored by a CODE-15%
  model), the C-index of ``log_risk`` against its ``time``/``event`` with a bootstrap 95% CI
  (:func:`external_validation`), in the JSON (``validation``) and the report;
- ``<out stem>_skipped.csv``: ``id``, ``source``, ``reason`` of every input that could not be
  scored, files in the folders given that are not ECGs included (always written, empty when
  none), summarised per reason on stderr;
- with ``explain``: ``<out stem>_explain/<id>.png`` per ECG, its cross-lead map and the
  temporal attention colouring its median beat (:func:`ecg_dan.interpretation.explain_ecg`,
  docs/method.md section 8), from the ensemble's first fold model (named in the figure), and
  an ``explain_png`` column.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_modules.atomic import atomic_write_text
from data_modules.cache import SURVIVAL_KINDS, open_cache, parallel_map, reason_key
from data_modules.errors import RecordSkip
from data_modules.sources.files import ECGItem, close_caches, discover, load_beat
from ecg_dan.config import ConfigError
from ecg_dan.log import get_logger
from ecg_dan.metrics import UndefinedMetricError, bootstrap_ci, harrell_cindex
from ecg_dan.model_file import export_run
from ecg_dan.outputs import check_outputs
from ecg_dan.predict import load_model
from ecg_dan.reporting.json_io import json_default

log = get_logger(__name__)

VALIDATION_BOOT = 1000  # bootstrap resamples of the external-validation C-index


def run_export(run_dir: str | Path, out: str | Path, fmt: str | None = None,
               overwrite: bool = False) -> Path:
    """Write the model file of a finetuning run (:mod:`ecg_dan.model_file`), or for an
    ``*.onnx`` ``out`` its ONNX file (:mod:`ecg_dan.onnx_model`; ``run_dir`` may also be a
    safetensors model file). ``fmt``, when given, must agree with the suffix; an existing
    ``out`` is replaced only with ``overwrite``."""
    is_onnx = Path(out).suffix.lower() == ".onnx"
    if fmt is not None and (fmt == "onnx") != is_onnx:
        raise ConfigError(f"--out {out}: a {fmt} model file must be named *."
                          f"{fmt} (predict tells the formats by the suffix)")
    check_outputs({"model file": Path(out)}, overwrite)
    if is_onnx:
        # deferred: onnx and onnxruntime, only for --format onnx
        from ecg_dan.onnx_export import export_onnx

        contents = export_onnx(run_dir, out).contents
    else:
        contents = export_run(run_dir, out)
    m = contents.manifest
    size = Path(out).stat().st_size
    log.info(f"{out}: model {contents.model_id} of run {m['run']['name']} "
             f"({len(m['members'])} fold models, {m['run']['objective']}, cohort "
             f"{m['run']['cohort']}, {size / 2**20:.1f} MiB)")
    return Path(out)


def _load(item: ECGItem, cardiosoft: str = "device") -> tuple[ECGItem, np.ndarray | str]:
    """Worker: the median beat of one ECG (a CardioSoft file's by the model's rule), or the
    reason it cannot be scored. Nothing a single file holds may stop the batch: an
    unexpected failure is recorded too."""
    try:
        return item, load_beat(item, cardiosoft=cardiosoft)
    except RecordSkip as e:
        return item, e.reason
    except Exception as e:  # noqa: BLE001 - one bad file must not end the batch
        return item, f"unreadable: {Path(item.source).name}: {type(e).__name__}: {e}"


def _lost(item: ECGItem, reason: str) -> tuple[ECGItem, str]:
    """An ECG whose worker died or ran past its time budget: a skip with the reason."""
    return item, reason


def _rows(model, batch: list[tuple[ECGItem, np.ndarray]], horizons: Sequence[float],
          skipped: list[tuple[str, str, str]]) -> Iterator[dict[str, Any]]:
    """The score rows of a batch; an input whose model output is not finite goes to
    ``skipped`` instead (an error for that input, never a score)."""
    members = np.ones((len(batch), len(model.members)), dtype=bool)
    sources = np.array([it.source for it, _ in batch])
    for src in set(sources):  # a cache's rows share one source: resolved once per batch
        rows = np.flatnonzero(sources == src)
        members[rows] = model.members_for([batch[i][0].id for i in rows], src)
    s = model.score(np.stack([b for _, b in batch]), horizons, members)
    for i, (item, _) in enumerate(batch):
        if not s["finite"][i]:
            skipped.append((item.id, item.source, f"non-finite model output: {item.id}: a "
                            f"fold model gives log-risk {s['log_risk'][i]} (NaN or infinite "
                            f"weights in model {model.model_id}, or an input that overflows)"))
            continue
        row: dict[str, Any] = {"id": item.id, "source": item.source,
                               "log_risk": float(s["log_risk"][i]),
                               "log_risk_std": float(s["log_risk_std"][i]),
                               "n_models": int(s["n_models"][i]),
                               "out_of_fold": bool(s["out_of_fold"][i]),
                               "percentile": float(s["percentile"][i]),
                               "high_risk_share": float(s["high_risk_share"][i])}
        for k, h in enumerate(horizons):
            row[f"risk@{h:g}"] = float(s["risk"][i, k])
        row["high_risk"] = bool(s["high_risk"][i])
        row["model_id"] = model.model_id
        yield row


def _scored(model, batch: list[tuple[ECGItem, np.ndarray]], horizons: Sequence[float],
            explain_dir: Path | None, skipped: list[tuple[str, str, str]]
            ) -> list[dict[str, Any]]:
    rows = list(_rows(model, batch, horizons, skipped))
    if explain_dir is not None:
        scored = {row["id"] for row in rows}
        kept = [(item, beat) for item, beat in batch if item.id in scored]
        for row, png in zip(rows, _explain(model, kept, explain_dir)):
            row["explain_png"] = png
    return rows


def _explain(model, batch: list[tuple[ECGItem, np.ndarray]], out_dir: Path) -> list[str]:
    """The per-ECG figures of one batch (one gradient pass per token: ~1-3 s per ECG on CPU)."""
    import re

    # deferred: matplotlib (the figures), only for --explain
    from ecg_dan.interpretation import explain_ecg

    m = model.members[0]
    paths = []
    for item, beat in batch:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(item.id)).strip("._") or "ecg"
        res = explain_ecg(m.module, beat, out_dir / f"{name}.png",
                          title=f"{item.id} (fold model seed {m.seed} fold {m.fold})")
        paths.append(str(res["path"]))
    return paths


def external_validation(table: pd.DataFrame, n_boot: int = VALIDATION_BOOT,
                        seed: int = 0) -> list[dict[str, Any]]:
    """Harrell's C-index (percentile bootstrap 95% CI, ``n_boot`` resamples) of the scores
    against the outcome of every scored survival cache (``time``/``event``, e.g. a SaMi-Trop
    cache scored by a CODE-15% model): one dict per cache, rows joined by eid. The score's
    time unit does not matter (a rank statistic)."""
    out = []
    for src in sorted(set(table["source"])):
        if Path(src).suffix.lower() not in (".h5", ".hdf5") or not Path(src).is_file():
            continue
        with open_cache(src) as f:
            if f.attrs["kind"] not in SURVIVAL_KINDS:
                continue
            outcome = pd.DataFrame({"time": f["time"][...].astype(np.float64),
                                    "event": f["event"][...].astype(np.int64)},
                                   index=f["eid"][...].astype(str))
        rows = table[table["source"] == src]
        o = outcome.loc[rows["id"].astype(str)]
        time_, event = o["time"].to_numpy(), o["event"].to_numpy()
        risk = rows["log_risk"].to_numpy(np.float64)
        v: dict[str, Any] = {"cache": src, "n": int(len(rows)), "n_events": int(event.sum()),
                             "cindex": None}
        try:
            ci = bootstrap_ci(harrell_cindex, time_, risk, event, n_boot=n_boot, seed=seed)
        except UndefinedMetricError:
            out.append(v)
            continue
        v.update(cindex=float(ci.estimate), ci_low=float(ci.low), ci_high=float(ci.high),
                 n_boot=int(n_boot))
        out.append(v)
    return out


def skipped_path(out: Path) -> Path:
    return out.with_name(out.stem + "_skipped.csv")


def predict_outputs(out: Path, explain: bool = False) -> dict[str, Path]:
    """Every path ``predict --out out`` writes, by what it is."""
    paths = {"CSV of the scores": out, "JSON of the scores": out.with_suffix(".json"),
             "list of skipped inputs": skipped_path(out)}
    if explain:
        paths["folder of figures"] = out.with_name(out.stem + "_explain")
    return paths


def run_predict(model_path: str | Path, inputs: Sequence[str | Path], out: str | Path,
                horizons: Sequence[float] | None = None, workers: int = 2,
                batch_size: int = 256, threads: int | None = None,
                progress: bool = True, explain: bool = False, overwrite: bool = False
                ) -> dict[str, Any]:
    """Score every ECG of ``inputs`` (see the module docstring); returns a summary with
    counts, files/s and ``report`` (the lines the CLI prints on stderr). Existing outputs
    are replaced only with ``overwrite``; none may lie inside a run directory."""
    import torch

    out = Path(out)
    check_outputs(predict_outputs(out, explain), overwrite, outside_runs=True)
    if threads:
        torch.set_num_threads(int(threads))
    model = load_model(model_path)
    hz = model.horizons if horizons is None else [float(h) for h in horizons]
    if not hz or any(not np.isfinite(h) or h <= 0 for h in hz):
        raise ConfigError(f"--horizons must be positive times in the run's unit "
                          f"({model.time_unit}), got {list(horizons or [])}")
    explain_dir = out.with_name(out.stem + "_explain") if explain else None
    if explain:
        cfg = model.manifest["model_config"]
        if model.runner is not None:
            raise ConfigError(f"--explain needs the PyTorch modules (a .safetensors model "
                              f"file or the run directory), not the ONNX file {model.source}")
        if not (cfg.get("cross_lead_attention", True) and cfg.get("temporal_attention", True)
                and cfg.get("name", "ecg_dan") == "ecg_dan"):
            raise ConfigError(f"--explain needs a model with both attention branches; "
                              f"{model.source} has model config {cfg}")
    late = model.past_follow_up(hz)
    if late:
        log.warning(f"horizon(s) {late} {model.time_unit} lie beyond the follow-up of some "
                    "fold model: their absolute risk is not estimable and is left empty (NaN)")
    t0 = time.perf_counter()
    items, skipped = discover(list(inputs))
    rows: list[dict[str, Any]] = []
    batch: list[tuple[ECGItem, np.ndarray]] = []
    kinds = {it.kind for it in items}
    if kinds <= {"cache"}:
        workers = 1  # rows of a cache are read, not derived: no process pool needed
    try:
        rule = model.manifest["preprocessing"].get("cardiosoft_beat", "device")
        load = functools.partial(_load, cardiosoft=rule)
        with contextlib.closing(parallel_map(load, items, workers, progress, "ECGs",
                                                  lost=_lost)) as results:
            for item, res in results:
                if isinstance(res, str):
                    skipped.append((item.id, item.source, res))
                    continue
                batch.append((item, res))
                if len(batch) >= batch_size:
                    rows += _scored(model, batch, hz, explain_dir, skipped)
                    batch = []
    finally:
        close_caches()
    if batch:
        rows += _scored(model, batch, hz, explain_dir, skipped)
    seconds = time.perf_counter() - t0
    n_files = len(items) + len(skipped)
    risk_cols = [f"risk@{h:g}" for h in hz]
    table = pd.DataFrame(rows, columns=["id", "source", "log_risk", "log_risk_std", "n_models",
                                        "out_of_fold", "percentile", "high_risk_share",
                                        *risk_cols, "high_risk", "model_id",
                                        *(["explain_png"] if explain else [])])
    skips = pd.DataFrame(skipped, columns=["id", "source", "reason"])
    atomic_write_text(out, table.to_csv(index=False))
    atomic_write_text(skipped_path(out), skips.to_csv(index=False))
    m = model.manifest
    validation = external_validation(table)
    summary = {"n_scored": len(table), "n_skipped": len(skips), "seconds": seconds,
               "ecgs_per_s": n_files / seconds if seconds > 0 else float("nan"),
               "csv": str(out), "skipped_csv": str(skipped_path(out)),
               "validation": validation}
    doc = dict(model={"id": model.model_id, "source": model.source, "run": m["run"]["name"],
                      "cohort": m["run"]["cohort"], "objective": model.objective,
                      "time_unit": model.time_unit, "n_models": len(model.members),
                      "top_fraction": model.top_fraction,
                      "high_risk_threshold": model.threshold,
                      "reference_n": int(model.reference.size)},
               horizons=hz, time_unit=model.time_unit, summary=summary, validation=validation,
               predictions=json.loads(table.to_json(orient="records", double_precision=15)),
               skipped=skips.to_dict(orient="records"))
    atomic_write_text(out.with_suffix(".json"), json.dumps(doc, indent=2, default=json_default))
    counts = collections.Counter(reason_key(r) for r in skips.reason)
    lines = [f"scored {len(table)} ECG(s), skipped {len(skips)} in {seconds:.1f} s "
             f"({summary['ecgs_per_s']:.1f} files/s) with model {model.model_id} -> {out}"]
    lines += [f"  skipped {n:5d} x {k}" for k, n in counts.most_common()]
    if len(skips):
        lines.append(f"  reasons per file: {skipped_path(out)}")
    for v in validation:
        lines.append(f"  C-index against the outcomes of {v['cache']}: {v['cindex']:.3f} "
                     f"(95% CI {v['ci_low']:.3f}-{v['ci_high']:.3f}, bootstrap "
                     f"{v['n_boot']}), {v['n']} ECGs, {v['n_events']} events"
                     if v.get("cindex") is not None else
                     f"  C-index against the outcomes of {v['cache']}: undefined "
                     f"({v['n']} ECGs, {v['n_events']} events)")
    summary["report"] = "\n".join(lines)  # the CLI prints it on stderr
    return summary
