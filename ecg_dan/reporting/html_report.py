"""One self-contained HTML report of a run or of a comparison matrix (``ecg-dan report``).

A researcher attaches the file to an email or a supplement, so it must stand alone: every
figure is embedded as a base64 ``data:`` URI, the CSS is inline, and nothing is fetched from
the network (no script, font or image link). Nothing is recomputed: the page shows what the
directory already holds, the Markdown the jobs wrote (``results.md``, ``comparison.md``,
``explain.md``; rendered with HTML escaped and Markdown images off) and tables of their CSVs
(``pandas.DataFrame.to_html``, escaped). Figures and tables the page does not know by name
(a newer job's output) still appear, under "Other figures" / "Other tables".

A *run* is a directory with its config and ``results.md`` (or a pretraining run's
``pretrain_eval.md``); a *matrix* is a directory with ``comparison.md`` in it or in its
subfolders (``ecg-dan compare`` output, ``runs/matrix_<cohort>/``, ``runs/matrix_all/``):
its label-efficiency curve where compare wrote one (``label_efficiency.{md,png}``, runs of
several training fractions), its comparison tables and forest plots, then each compared
run's key figures.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from markdown_it import MarkdownIt
from omegaconf import DictConfig

from data_modules.errors import DataError
from ecg_dan import __version__
from ecg_dan.reporting.flatten import flat_numbers
from ecg_dan.reporting.run_kind import data_label, model_kind
from ecg_dan.run_dir import RunDir, RunDirError

__all__ = ["Report", "build_report", "default_out"]

REPORT_NAME = "report.html"
# written by ecg-dan compare (ecg_dan/jobs/compare.py)
COMPARISON_MD, COMPARISON_JSON = "comparison.md", "comparison.json"
# written by ecg-dan compare over runs of several training fractions
LABEL_EFFICIENCY_MD, LABEL_EFFICIENCY_PNG = "label_efficiency.md", "label_efficiency.png"
# written by ecg-dan explain (ecg_dan/jobs/explain.py)
EXPLAIN_MD = "explain.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSS_DPI = 96  # a figure is shown at its designed size: pixels * CSS_DPI / its dpi
DEFAULT_DPI = 100  # matplotlib's, for a PNG that records none
MAX_TABLE_ROWS = 60  # a larger CSV is named, not embedded
VERSION_PACKAGES = ("torch", "lightning", "numpy", "pandas", "omegaconf")

_MD = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px;
       line-height: 1.45; color: #1f2328; max-width: 1120px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; border-bottom: 2px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 16px; margin-top: 20px; }
h4, h5, h6 { font-size: 14px; }
.sub { color: #57606a; margin: 0 0 16px; }
.wide { overflow-x: auto; margin: 8px 0 12px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #d0d7de; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f0f3f6; font-weight: 600; }
tbody tr:nth-child(even) td { background: #f8f9fa; }
table.meta { min-width: 520px; }
table.meta th { width: 260px; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px;
       background: #f0f3f6; padding: 0 3px; border-radius: 3px; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 10px; overflow-x: auto;
      font-size: 12px; }
figure { margin: 0; max-width: 100%; break-inside: avoid; }
figure img { display: block; width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 12.5px; margin-top: 4px; }
.figs { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 12px 20px;
        margin: 8px 0; }
.gallery figure { max-width: calc(50% - 10px); }
details { margin: 8px 0; }
summary { cursor: pointer; color: #0969da; }
.none { color: #57606a; font-style: italic; }
.run { border-top: 1px solid #d0d7de; margin-top: 24px; }
@media print { .wide { overflow: visible; } h2, h3 { break-after: avoid; } }
"""


@dataclass(frozen=True)
class Report:
    """A built report: the page, what it describes (``run`` or ``matrix``) and the config
    whose W&B settings say where the page may be logged (a matrix: its first run's)."""

    html: str
    kind: str
    cfg: DictConfig | None


def default_out(target: str | os.PathLike) -> Path:
    return Path(target) / REPORT_NAME


def build_report(target: str | os.PathLike) -> Report:
    """The report of a run or matrix directory; :class:`DataError` naming what a folder that
    is neither lacks."""
    path = Path(target)
    if not path.is_dir():
        raise DataError(f"{path}: no such directory (give a run or a matrix directory)")
    rd = RunDir(path)
    if rd.has_config():
        if not _results_md(rd):
            raise RunDirError(f"{path}: a run directory without {rd.results_md.name} (run or "
                              "evaluate it first: ecg-dan evaluate finetune RUN_DIR)")
        cfg = rd.load_config()
        return Report(_run_page(rd, cfg), "run", cfg)
    comparisons = _comparison_dirs(path)
    if comparisons:
        runs = _matrix_runs(path, comparisons)
        cfg = next((RunDir(d).load_config() for d in runs.values()
                    if RunDir(d).has_config()), None)
        return Report(_matrix_page(path, comparisons, runs), "matrix", cfg)
    raise DataError(f"{path}: neither a run directory (no {rd.config_path.name} with "
                    f"{rd.results_md.name}) nor a matrix or comparison directory (no "
                    f"{COMPARISON_MD} in it or its subfolders)")


# ----------------------------------------------------------------------------- pieces
def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _breakable_headers(table: str) -> str:
    """Column names such as ``td_auc@12`` may break after ``_`` and ``@``, so a wide table
    fits the page."""
    return re.sub(r"<th>([^<]*)</th>",
                  lambda m: "<th>" + re.sub(r"([_@])", r"\1<wbr>", m[1]) + "</th>", table)


def _markdown(text: str, shift: int = 2) -> str:
    """Markdown of the project's jobs as HTML (raw HTML escaped, images off), headings
    moved ``shift`` levels down and tables made scrollable."""
    out = _breakable_headers(_MD.render(text))
    out = re.sub(r"<(/?)h([1-6])>", lambda m: f"<{m[1]}h{min(6, int(m[2]) + shift)}>", out)
    return out.replace("<table>", '<div class="wide"><table>').replace("</table>",
                                                                       "</table></div>")


def png_css_width(data: bytes) -> int:
    """The width in CSS pixels at which a PNG shows at its designed size (its ``pHYs``
    resolution; matplotlib writes the figure's dpi there)."""
    width = struct.unpack(">I", data[16:20])[0]
    dpi, pos = DEFAULT_DPI, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"pHYs" and length >= 9:
            ppu, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            if unit == 1 and ppu > 0:  # pixels per metre
                dpi = ppu * 0.0254
            break
        if kind == b"IDAT":
            break
        pos += 12 + length
    return max(1, round(width * CSS_DPI / dpi))


def _figure(png: Path, caption: str = "") -> str:
    data = png.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24:
        return f'<p class="none">{esc(png.name)}: not a PNG file, not embedded</p>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    text = f"<code>{esc(png.name)}</code>" + (f": {esc(caption)}" if caption else "")
    return (f'<figure style="width: {png_css_width(data)}px"><img src="{uri}" '
            f'alt="{esc(png.name)}"><figcaption>{text}</figcaption></figure>')


def _figures(pngs: Iterable[Path], captions: dict[str, str] | None = None,
             gallery: bool = False) -> str:
    """Figures side by side where they fit (``gallery``: two per row at most)."""
    items = [_figure(p, (captions or {}).get(p.name, "")) for p in pngs]
    cls = "figs gallery" if gallery else "figs"
    return f'<div class="{cls}">{"".join(items)}</div>' if items else ""


def _frame_html(df: pd.DataFrame) -> str:
    table = df.to_html(index=False, escape=True, border=0, na_rep="",
                       float_format=lambda v: f"{v:.4g}")
    return f'<div class="wide">{_breakable_headers(table)}</div>'


def _csv_table(csv: Path, summary: str) -> str:
    """A CSV as a collapsed table (a large one only named, with its row count)."""
    with open(csv, "rb") as fh:
        rows = max(sum(1 for _ in fh) - 1, 0)
    if rows > MAX_TABLE_ROWS:
        return (f'<p class="none"><code>{esc(csv.name)}</code>: {rows} rows, not embedded '
                "(see the file)</p>")
    df = pd.read_csv(csv)
    return (f"<details><summary>{esc(summary)} (<code>{esc(csv.name)}</code>, {len(df)} rows)"
            f"</summary>{_frame_html(df)}</details>")


def _meta_table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows
                   if v not in (None, ""))
    return f'<table class="meta"><tbody>{body}</tbody></table>'


def _none(what: str) -> str:
    return f'<p class="none">{esc(what)}</p>'


def _page(title: str, body: str) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"sub\">written by ecg-dan {esc(__version__)} "
            f"on {now} from the files of the directory; nothing was recomputed</p>"
            f"{body}</body></html>\n")


def versions() -> list[tuple[str, str]]:
    """Versions of the environment writing the report (a run records no versions of its
    own; its config hash and fold checkpoints are under "Run record")."""
    out = [("ecg-dan", __version__), ("python", platform.python_version())]
    for pkg in VERSION_PACKAGES:
        try:
            out.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            out.append((pkg, "not installed"))
    return out


# ----------------------------------------------------------------------------- a run
def _known_files(rd: RunDir) -> set[str]:
    """The run's files that have their own section (the rest go to "Other ...")."""
    return {p.name for p in (rd.calibration_png, rd.decision_curve_png, rd.kaplan_meier_png,
                             rd.results_csv, rd.calibration_csv, rd.decision_curve_csv,
                             rd.oof_csv)}


def _results_md(rd: RunDir) -> Path | None:
    return next((p for p in (rd.results_md, rd.pretrain_eval_md) if p.is_file()), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _run_description(rd: RunDir, cfg: DictConfig) -> list[tuple[str, Any]]:
    task = str(cfg.get("task"))
    rows: list[tuple[str, Any]] = [("run directory", rd.path.resolve()), ("task", task)]
    if task != "pretrain":
        model = (f"Cox regression on {cfg.baseline.features} (no network)"
                 if task == "cox_baseline"
                 else f"{cfg.model.name}, objective {cfg.finetune.get('objective')}")
        rows += [("cohort", cfg.finetune.cohort), ("data", data_label(cfg)),
                 ("model kind", model_kind(cfg)), ("model", model),
                 ("time unit", cfg.data.get("time_unit"))]
        if rd.has_predictions():
            try:
                folds = rd.scored_folds()
            except RunDirError:
                folds = []
            seeds = sorted({f.seed for f in folds})
            rows.append(("fold models", f"{len(folds)} (seeds {', '.join(map(str, seeds))})"
                         if folds else "none scored"))
    else:
        rows.append(("data", data_label(cfg)))
    return rows


def _key_numbers(rd: RunDir) -> tuple[list[tuple[str, Any]], str]:
    """Rows of the C-index with its CI (results.json) and the cohort size (results.csv),
    and a collapsed table of every number of results.json."""
    res = _read_json(rd.results_json)
    rows: list[tuple[str, Any]] = []
    if rd.results_csv.is_file():
        table = pd.read_csv(rd.results_csv)
        pooled = table[table["row"] == "pooled"] if "row" in table else table.iloc[:0]
        if len(pooled) and {"n", "events"} <= set(pooled.columns):
            rows.append(("participants (events)",
                         f"{int(pooled.n.iloc[0])} ({int(pooled.events.iloc[0])})"))
    if _finite(res.get("harrell_c_mean")):
        std = res.get("harrell_c_std_paper")
        rows.append(("Harrell's C, fold mean ± std (paper's)", _fmt(res["harrell_c_mean"])
                     + (f" ± {_fmt(std)}" if _finite(std) else "")))
    if _finite(res.get("harrell_c_pooled")):
        lo, hi = res.get("harrell_c_ci_low"), res.get("harrell_c_ci_high")
        ci = f" [95% CI {_fmt(lo)}, {_fmt(hi)}]" if _finite(lo) and _finite(hi) \
            else " (no bootstrap CI: finetune.n_boot=0)"
        rows.append(("Harrell's C, pooled out-of-fold", _fmt(res["harrell_c_pooled"]) + ci))
    flat = flat_numbers(res)
    if not flat:
        return rows, ""
    every = _frame_html(pd.DataFrame({"key": list(flat), "value": list(flat.values())}))
    return rows, (f"<details><summary>every number of <code>{esc(rd.results_json.name)}"
                  f"</code> ({len(flat)})</summary>{every}</details>")


def _explain_section(rd: RunDir) -> str:
    ex = rd.explain_dir
    pngs = sorted(ex.glob("*.png")) if ex.is_dir() else []
    if not pngs:
        return _none(f"not computed (no figures in {ex.name}/; run: ecg-dan explain "
                     f"{rd.path})")
    md = (ex / EXPLAIN_MD).read_text() if (ex / EXPLAIN_MD).is_file() else ""
    # explain.md lists its figures as "- `name.png`: what it shows"
    captions = dict(re.findall(r"^- `([^`]+\.png)`: (.+)$", md, flags=re.M))
    order = {name: i for i, name in enumerate(captions)}
    pngs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    text = f"<details><summary>{esc(EXPLAIN_MD)}</summary>{_markdown(md)}</details>" \
        if md else ""
    return _figures(pngs, captions, gallery=True) + text


def _run_record(rd: RunDir) -> str:
    rec = _read_json(rd.record_path)
    rows = [("config hash", rec.get("config_hash"))]
    parts = [_meta_table(rows)] if rec.get("config_hash") else []
    if rd.has_predictions():
        folds = []
        try:
            scored = rd.scored_folds()
        except RunDirError:
            scored = []
        for ff in scored:
            meta = _read_json(ff.meta)
            folds.append({"seed": ff.seed, "fold": ff.fold, **{
                k: v for k, v in meta.items() if not isinstance(v, (dict, list))}})
        if folds:
            parts.append(_frame_html(pd.DataFrame(folds)))
    return "".join(parts) or _none("no run record")


def _run_figure_section(png: Path, csv: Path | None, what: str) -> str:
    """A figure of the run and its table, or 'not computed'."""
    parts = [_figures([png])] if png.is_file() else []
    if csv is not None and csv.is_file():
        parts.append(_csv_table(csv, what))
    return "".join(parts) or _none(f"not computed (no {png.name} in the run)")


def _run_body(rd: RunDir, cfg: DictConfig, level: int = 2, full: bool = True) -> str:
    """A run's sections (``full``: everything; else the key numbers and figures, for a
    matrix), headings at ``level``."""
    h = f"h{level}"
    res_md = _results_md(rd)
    key_rows, every_number = _key_numbers(rd)
    parts = [_meta_table(_run_description(rd, cfg) + key_rows), every_number]
    results = _markdown(res_md.read_text(), shift=level)
    if full:
        parts.append(f"<{h}>Results (<code>{esc(res_md.name)}</code>)</{h}>{results}")
    sections = [
        ("Calibration", _run_figure_section(rd.calibration_png, rd.calibration_csv,
                                            "observed vs predicted risk per risk group")),
        ("Decision curve", _run_figure_section(rd.decision_curve_png, rd.decision_curve_csv,
                                               "net benefit by threshold")),
        ("Kaplan-Meier by risk group", _run_figure_section(rd.kaplan_meier_png, None, "")),
    ]
    if cfg.get("task") == "pretrain":
        sections = []
    for title, content in sections:
        parts.append(f"<{h}>{esc(title)}</{h}>{content}")
    if full:
        if cfg.get("task") != "pretrain":
            parts.append(f"<{h}>Attention (ecg-dan explain)</{h}>{_explain_section(rd)}")
        known = _known_files(rd)
        other_png = [p for p in sorted(rd.path.glob("*.png")) if p.name not in known]
        if other_png:
            parts.append(f"<{h}>Other figures</{h}>{_figures(other_png)}")
        other_csv = [p for p in sorted(rd.path.glob("*.csv")) if p.name not in known]
        if other_csv:
            parts.append(f"<{h}>Other tables</{h}>"
                         + "".join(_csv_table(p, p.stem) for p in other_csv))
        parts.append(f"<{h}>Configuration</{h}><details><summary>resolved config "
                     f"(<code>{esc(rd.config_path.name)}</code>)</summary><pre>"
                     f"{esc(rd.config_path.read_text())}</pre></details>")
        parts.append(f"<{h}>Run record</{h}>{_run_record(rd)}")
    else:
        parts.append(f"<details><summary><code>{esc(res_md.name)}</code></summary>{results}"
                     "</details>")
    return "".join(parts)


def _run_page(rd: RunDir, cfg: DictConfig) -> str:
    body = _run_body(rd, cfg) + f"<h2>Versions</h2>{_meta_table(versions())}"
    return _page(f"ECG-DAN report: {cfg.name}", body)


# ----------------------------------------------------------------------------- a matrix
def _matrix_folders(root: Path) -> list[Path]:
    """The root, its subfolders and theirs, run directories left out."""
    cands = [root]
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        cands.append(child)
        cands += sorted(p for p in child.iterdir() if p.is_dir())
    return [d for d in cands if not RunDir(d).has_config()]


def _comparison_dirs(root: Path) -> list[Path]:
    """Folders with a comparison.md: the root, its subfolders and theirs (a matrix's
    ``comparison/``, ``comparison_vs_clinical/``, a multi-cohort ``comparison_<cohort>/``,
    a label-efficiency matrix's ``comparison/comparison_frac<f>/``)."""
    return [d for d in _matrix_folders(root) if (d / COMPARISON_MD).is_file()]


def _label_efficiency_section(root: Path) -> str:
    """Each label-efficiency curve under the matrix: its table and figure."""
    parts = []
    for d in _matrix_folders(root):
        if (d / LABEL_EFFICIENCY_MD).is_file():
            parts.append(f"<h2>Label efficiency: <code>{esc(_rel(d, root))}</code></h2>")
            parts.append(_markdown((d / LABEL_EFFICIENCY_MD).read_text(), shift=2))
            parts.append(_figures([d / LABEL_EFFICIENCY_PNG]
                                  if (d / LABEL_EFFICIENCY_PNG).is_file() else []))
    return "".join(parts)


def _resolve(recorded: str, root: Path) -> Path:
    """A run directory as a comparison recorded it (absolute, or relative to where compare
    ran: here or a folder above the matrix), else the folder of that name in the matrix."""
    p = Path(recorded)
    above = [a / p for a in root.resolve().parents] if not p.is_absolute() else []
    for cand in (p, *above, root / p.name, root.parent / p.name):
        if cand.is_dir():
            return cand
    return p


def _matrix_runs(root: Path, comparisons: list[Path]) -> dict[str, Path]:
    """``{name: run directory}``: each compared run once, named and ordered as the
    comparisons name them, then the matrix's cell folders no comparison names."""
    seen: dict[Path, tuple[str, Path]] = {}
    for d in comparisons:
        runs = _read_json(d / COMPARISON_JSON).get("runs", {})
        for name, rec in runs.items():
            p = _resolve(str(rec.get("dir", "")), root)
            seen.setdefault(p.resolve(), (str(name), p))
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        rd = RunDir(child)
        if rd.has_config() and rd.results_md.is_file():
            seen.setdefault(child.resolve(), (child.name, child))
    out: dict[str, Path] = {}
    for name, p in seen.values():
        out[name if name not in out else str(p)] = p
    return out


def _rel(p: Path, root: Path) -> str:
    """A folder under the matrix by its relative path (the matrix itself by its name)."""
    rel = p.resolve().relative_to(root.resolve())
    return str(rel) if rel.parts else root.resolve().name


def _matrix_page(root: Path, comparisons: list[Path], runs: dict[str, Path]) -> str:
    parts = [_meta_table([("directory", root.resolve()), ("comparisons", len(comparisons)),
                          ("runs", len(runs))])]
    parts.append(_label_efficiency_section(root))
    for d in comparisons:
        parts.append(f"<h2>Comparison: <code>{esc(_rel(d, root))}</code></h2>")
        parts.append(_markdown((d / COMPARISON_MD).read_text(), shift=2))
        parts.append(_figures(p for p in sorted(d.glob("*.png"))
                              if p.name != LABEL_EFFICIENCY_PNG))
    for name, run in runs.items():
        rd = RunDir(run)
        parts.append(f'<div class="run"><h2>Run: <code>{esc(name)}</code></h2>')
        if not rd.has_config() or not _results_md(rd):
            parts.append(_none(f"not found or without results: {run}") + "</div>")
            continue
        parts.append(_run_body(rd, rd.load_config(), level=3, full=False) + "</div>")
    parts.append(f"<h2>Versions</h2>{_meta_table(versions())}")
    return _page(f"ECG-DAN report: {root.resolve().name}", "".join(parts))
