"""``ecg-dan report``: one self-contained HTML file, checked in a real browser.

The run is the session's tiny Cox run (copied, then given the files other jobs add: an
``explain/`` figure, a decision curve, a figure and a table the report does not know by
name). Headless Chromium (the Debian package ``chromium``; ``.ci/run`` installs it) renders
the page to a PNG; a load probe appended to a copy of the page (the report itself has no
script) counts the images the browser decoded, so "every figure loaded" is the browser's
word, not ours. Without Chromium the browser part skips with the reason.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
import types
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ecg_dan.cli import main
from ecg_dan.reporting.html_report import PNG_SIGNATURE, png_css_width
from ecg_dan.reporting.png import save_png
from ecg_dan.run_dir import RunDir

LOAD_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.title = 'images loaded: ' + ok + '/' + imgs.length;
});
</script>"""
HOSTILE = "<script>alert('x')</script> & <img src=http://example.com/x.png>"


class _Page(HTMLParser):
    """The tags of a page that matter here: images, tables, headings, scripts, links."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.urls: list[str] = []  # every src / href attribute
        self.tables: list[list[str]] = []  # header cells of each table
        self.headings: list[str] = []
        self.tags: set[str] = set()
        self._th = self._h = False

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        a = dict(attrs)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        elif tag == "table":
            self.tables.append([])
        self._th = tag == "th" or self._th
        self._h = tag in ("h2", "h3") or self._h
        if tag == "th":
            self.tables[-1].append("")
        if self._h and tag in ("h2", "h3"):
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == "th":
            self._th = False
        if tag in ("h2", "h3"):
            self._h = False

    def handle_data(self, data):
        if self._th:
            self.tables[-1][-1] += data
        if self._h:
            self.headings[-1] += data


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _plot(out: Path, title: str) -> None:
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.subplots()
    ax.plot(np.arange(10), np.arange(10) ** 0.5)
    ax.set_title(title)
    save_png(fig, out)


@pytest.fixture(scope="module")
def run(tiny_cox_run, tmp_path_factory) -> Path:
    """A copy of the tiny Cox run with the files other jobs add (explain/, decision curve)
    and two the report does not know by name."""
    rd = RunDir(tmp_path_factory.mktemp("report") / "run")
    shutil.copytree(tiny_cox_run, rd.path, ignore=shutil.ignore_patterns("*.ckpt", "explain"))
    rd.explain_dir.mkdir(exist_ok=True)
    _plot(rd.explain_dir / "cross_lead.png", "cross-lead")
    (rd.explain_dir / "explain.md").write_text(
        "# explain\n\n- `cross_lead.png`: Cross-lead attention of the groups.\n")
    _plot(rd.decision_curve_png, "decision curve")
    pd.DataFrame({"horizon": [12, 12], "threshold": [0.1, 0.2], "net_benefit": [0.05, 0.01]}
                 ).to_csv(rd.decision_curve_csv, index=False)
    _plot(rd.path / "new_figure.png", "a figure of a newer job")
    pd.DataFrame({"a": [1, 2], "b": [HOSTILE, "y"]}).to_csv(rd.path / "new_table.csv",
                                                            index=False)
    with open(rd.results_md, "a") as fh:
        fh.write(f"\nNote: {HOSTILE}\n")
    return rd.path


def _check_images(srcs: list[str]) -> list[tuple[int, int]]:
    """Every image is an embedded PNG that decodes; their sizes."""
    sizes = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert min(im.size) >= 50, im.size
            sizes.append(im.size)
    return sizes


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium; "
                    ".ci/run installs it): the browser check of the report did not run")
    return exe


def test_run_report_renders_every_figure_in_chromium(run, tmp_path, capsys):
    assert main(["report", str(run)]) == 0
    out = run / "report.html"  # the default --out
    assert capsys.readouterr().out.strip().endswith(str(out))
    html = out.read_text()
    page = _parse(html)

    # self-contained: no script, stylesheet link, frame or remote source of any kind
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert all(u.startswith("data:image/png;base64,") for u in page.urls)
    # every figure of the run, embedded: calibration, decision curve, KM, explain, other
    assert len(page.imgs) == 5
    _check_images(page.imgs)
    for section in ("Calibration", "Decision curve", "Kaplan-Meier by risk group",
                    "Attention (ecg-dan explain)", "Other figures", "Other tables",
                    "Configuration", "Run record", "Versions"):
        assert section in page.headings, (section, page.headings)
    headers = [" ".join(t) for t in page.tables]
    assert any("harrell_c" in h and "antolini_c" in h for h in headers)  # results.md
    assert any("O/E" in h for h in headers)  # calibration at the horizons
    assert any("net_benefit" in h for h in headers)  # decision_curve.csv
    assert any("observed" in h and "predicted" in h for h in headers)  # calibration.csv
    # text from the files is escaped, never markup
    assert "&lt;script&gt;alert(" in html and "<script>alert(" not in html
    assert "Cross-lead attention of the groups." in html  # explain.md's caption

    # the browser: every image decoded, and the page drawn (not blank, content far down)
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", LOAD_PROBE + "</body>"))
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1200,3000", f"--screenshot={shot}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    title = re.search(r"<title>([^<]*)</title>", proc.stdout)
    assert title and title[1] == "images loaded: 5/5", (title and title[1], proc.stderr[-1000:])
    with Image.open(shot) as im:
        px = np.asarray(im.convert("L"), dtype=np.float64)
    assert px.shape == (3000, 1200)
    assert px.std() > 10  # not a blank page
    rows = np.flatnonzero((px < 200).any(axis=1))  # rows with dark pixels (text, plots)
    assert rows.max() > 2000, rows.max()  # content well below the first screen


def test_matrix_report_embeds_comparison_and_each_run(run, tmp_path):
    """A comparison folder (as ``ecg-dan compare`` writes it, the run recorded by a path
    that no longer exists there) gives its table, forest plot and each run's figures."""
    cmp_dir = tmp_path / "matrix" / "comparison"
    cmp_dir.mkdir(parents=True)
    shutil.copytree(run, tmp_path / "matrix" / "proposed")
    (cmp_dir / "comparison.md").write_text(
        "# Model comparison\n\n| model | pooled C [95% CI] |\n|---|---|\n"
        "| **proposed** (reference) | 0.61 [0.55, 0.66] |\n")
    (cmp_dir / "comparison.json").write_text(
        '{"runs": {"proposed": {"dir": "elsewhere/proposed"}}}')
    _plot(cmp_dir / "forest_plot.png", "forest")
    out = tmp_path / "m.html"
    assert main(["report", str(tmp_path / "matrix"), "--out", str(out)]) == 0
    page = _parse(out.read_text())
    assert "Comparison: comparison" in page.headings
    assert "Run: proposed" in page.headings
    assert any("pooled C [95% CI]" in " ".join(t) for t in page.tables)
    # forest plot + the run's calibration, decision curve and Kaplan-Meier figures
    assert len(page.imgs) == 4
    _check_images(page.imgs)


def test_a_folder_that_is_neither_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path) in err
    assert "neither a run directory" in err and "comparison.md" in err


def test_figures_show_at_their_designed_size(tmp_path):
    fig = Figure(figsize=(6, 4), dpi=150)
    fig.subplots()
    save_png(fig, tmp_path / "f.png")
    assert png_css_width((tmp_path / "f.png").read_bytes()) == 576  # 6 in at 96 CSS px/in


def test_report_goes_to_wandb_as_html_when_enabled(run, tmp_path, monkeypatch):
    """Through the jobs' one W&B helper, and only with W&B on."""
    from ecg_dan.jobs import common
    from ecg_dan.jobs.report import run_report

    logged: dict = {}
    fake_run = types.SimpleNamespace(summary={}, log=logged.update, finish=lambda: None)
    fake = types.SimpleNamespace(run=None, init=lambda **kw: fake_run,
                                 Html=lambda path, inject: ("html", Path(path).name, inject))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("explain"))
    (tmp_path / "run" / "config.yaml").write_text(
        (run / "config.yaml").read_text().replace("wandb: false", "wandb: true"))
    monkeypatch.setattr(common, "wandb_mode", lambda: "offline")
    run_report(tmp_path / "run", tmp_path / "r.html")
    assert logged == {"report/r": ("html", "r.html", False)}
    logged.clear()
    monkeypatch.setattr(common, "wandb_mode", lambda: "disabled")
    run_report(tmp_path / "run", tmp_path / "r.html")
    assert logged == {}
