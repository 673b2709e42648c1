"""Job: the paper's comparison matrix for one cohort, then one comparison table.

Cells (each a normal run directory under ``runs/matrix_<cohort>[_synthetic]/``):

- ``proposed``: ECG-DAN pretrained by reconstruction + text alignment, finetuned with the
  cohort's paper config (``finetune_<cohort>``); the reference of the comparison;
- every ``experiments/ablations/*.yaml`` and ``experiments/baselines/*.yaml``, applied as an
  overlay (its own keys only) on the cohort's paper config, so ``COHORT=mi`` uses the MI
  settings.

Pretraining: a cell whose YAML has ``model:`` or ``pretrain:`` keys is pretrained with the
paper's pretraining config plus those keys (architecture variants, pretraining strategies,
the reconstruction baselines); the others share one default pretraining (or ``ckpt``).
``finetune.scratch`` cells are not pretrained, Cox baselines (``task: cox_baseline``) have
no network, and ``ecgdan_clinical_cox`` combines the ``proposed`` cell's risks with age and
sex, so it runs after it.

Label efficiency (``fractions``, ``make ablations FRACTIONS=0.05,0.1,0.25,1``): every
selected cell runs at each fraction of each training fold (``finetune.train_fraction``:
nested, stratified by event, the held-out folds unchanged) in ``frac<f>/<cell>``; the
pretrainings are shared by all fractions (they use no outcome). Without ``cells`` the
label-efficiency cells run (:data:`LABEL_EFFICIENCY_CELLS`): the proposed model, scratch,
the frozen pretrained and random encoders' survival probes and the clinical Cox model.
The comparison groups the runs by fraction (differences to ``scratch``) and draws the
curve.

Resumable: a cell whose predictions exist for the same config is skipped, a partial cell
resumes from ``last.ckpt``, a cell whose config changed is refused with the keys named
(the run-directory rule of every job). ``cells`` selects cells by name. At the end
:func:`ecg_dan.jobs.compare.run_compare` writes the table and the forest plot
(``comparison/``, reference: the proposed model) and, when both Cox models on age and sex
ran, the incremental value of the ECG over them (``comparison_vs_clinical/``, reference:
``clinical_cox``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ecg_dan.config import EXPERIMENTS_DIR, ConfigError, finetune_experiment, load_config
from ecg_dan.jobs.compare import run_compare
from ecg_dan.jobs.data import PTBXL_HELP, survival_cache_kind
from ecg_dan.jobs.finetune import run_finetune
from ecg_dan.jobs.pretrain import run_pretrain
from ecg_dan.log import get_logger

log = get_logger(__name__)

PROPOSED = "proposed"
CLINICAL, CLINICAL_PLUS = "clinical_cox", "ecgdan_clinical_cox"
GROUPS = ("ablations", "baselines")
SCRATCH = "scratch"
LABEL_EFFICIENCY_CELLS = (PROPOSED, SCRATCH, "probe_pretrained", "probe_random", CLINICAL)


def matrix_cells() -> dict[str, str]:
    """``{cell name: experiment name}`` of every cell, the proposed model first."""
    cells = {PROPOSED: ""}
    for group in GROUPS:
        for p in sorted((EXPERIMENTS_DIR / group).glob("*.yaml")):
            if p.stem in cells:
                raise ConfigError(f"two matrix cells are named {p.stem!r}")
            cells[p.stem] = f"{group}/{p.stem}"
    return cells


def select_cells(wanted: Sequence[str] | None) -> dict[str, str]:
    cells = matrix_cells()
    if not wanted:
        return cells
    unknown = sorted(set(wanted) - set(cells))
    if unknown:
        raise ConfigError(f"unknown matrix cell(s) {unknown}; available: {', '.join(cells)}")
    # ecgdan_clinical_cox reads the proposed cell's predictions: keep the order of the matrix
    return {k: v for k, v in cells.items() if k in wanted}


def parse_fractions(text: str | Sequence[float] | None) -> list[float] | None:
    """``FRACTIONS=0.05,0.1,1`` -> sorted unique fractions in (0, 1]; None when empty."""
    if text is None or text == "":
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        out = sorted({float(str(v).strip()) for v in items if str(v).strip()})
    except ValueError:
        raise ConfigError(f"FRACTIONS={text}: expected comma-separated numbers in (0, 1], "
                          "e.g. 0.05,0.1,0.25,1") from None
    bad = [f for f in out if not 0 < f <= 1]
    if bad or not out:
        raise ConfigError(f"FRACTIONS={text}: every fraction must be in (0, 1] (got {bad})")
    return out


def uses_pretraining(cfg: DictConfig) -> bool:
    """A cell that starts from a pretraining checkpoint: a network finetuned from it or a
    probe of its frozen encoder (not from scratch)."""
    encoder = cfg.task == "finetune" or (cfg.task == "cox_baseline"
                                         and cfg.baseline.features == "encoder")
    return bool(encoder and not cfg.finetune.scratch)


def _pretrain_overrides(raw: DictConfig) -> list[str]:
    """A cell's own pretraining: its YAML's ``model:`` and ``pretrain:`` keys. A variant
    that does not train the decoder (``pretrain.w_recon=0``) keeps the checkpoint with the
    lowest ``val/loss``: its ``val/recon_mse`` is still logged but says nothing."""
    ov = [f"{section}.{k}={val}" for section in ("model", "pretrain")
          for k, val in (raw.get(section) or {}).items()]
    if float(OmegaConf.select(raw, "pretrain.w_recon", default=1.0)) == 0:
        ov.append("checkpoint.monitor=val/loss")
    return ov


class Matrix:
    """The cells of one cohort and where they are written."""

    def __init__(self, cohort: str, synthetic: bool, ptbxl_dir: str | None = None,
                 ckpt: str | None = None, extra: Sequence[str] = (),
                 root: str | Path = "runs", pretrain_extra: Sequence[str] = ()) -> None:
        self.cohort, self.synthetic = cohort, synthetic
        self.ptbxl_dir, self.ckpt, self.extra = ptbxl_dir, ckpt, list(extra)
        self.pretrain_extra = list(pretrain_extra)
        self.tag = f"matrix_{cohort}{'_synthetic' if synthetic else ''}"
        self.root = Path(root) / self.tag
        self.fraction: float | None = None  # label-efficiency runs: cells in frac<f>/
        # the cohort's rows as its own experiment selects them (finetune_code15: all)
        self.rows = str(load_config(finetune_experiment(cohort)).finetune.cohort)

    def pretrain_config(self, name: str, overrides: Sequence[str] = ()) -> DictConfig:
        if self.synthetic:  # the demo's pretraining (8 epochs on the synthetic twin)
            exp, ov = "demo_pretrain", []
        else:
            if not self.ptbxl_dir:
                raise ConfigError(PTBXL_HELP)
            exp, ov = "pretrain", [f"data.ptbxl_dir={self.ptbxl_dir}"]
        return load_config(exp, [*ov, f"name={self.tag}-pretrain-{name}",
                                 f"run_dir={self.root / 'pretrain' / name}",
                                 f"logging.group={self.tag}", *overrides, *self.extra,
                                 *self.pretrain_extra])

    @property
    def cells_root(self) -> Path:
        """Where the cells' run directories are: ``root``, or ``root/frac<f>``."""
        return self.root if self.fraction is None else self.root / f"frac{self.fraction:g}"

    def finetune_config(self, cell: str, experiment: str, ckpt: str | None) -> DictConfig:
        ov = [f"+{experiment}"] if experiment else []
        if self.synthetic:
            ov += ["+synthetic", "+cpu_finetune"]
        name = f"{self.tag}-{cell}"
        if self.fraction is not None:
            name = f"{self.tag}-frac{self.fraction:g}-{cell}"
            ov.append(f"finetune.train_fraction={self.fraction}")
        ov += [f"name={name}", f"run_dir={self.cells_root / cell}",
               f"logging.group={self.tag}", f"finetune.cohort={self.rows}"]
        if cell == PROPOSED:
            ov.append("logging.compare_label=ecg_dan")
        if ckpt:
            ov.append(f"finetune.ckpt={ckpt}")
        cfg = load_config(finetune_experiment(self.cohort), [*ov, *self.extra])
        if cfg.task == "cox_baseline" and cfg.baseline.features == "ecgdan_clinical":
            cfg.baseline.ecgdan_run = str(self.cells_root / PROPOSED)
        return cfg


def run_matrix(cohort: str, synthetic: bool, cells: Sequence[str] | None = None,
               ptbxl_dir: str | None = None, ckpt: str | None = None,
               extra: Sequence[str] = (), n_boot: int | None = None,
               pretrain_extra: Sequence[str] = (), root: str | Path = "runs",
               fractions: Sequence[float] | None = None) -> Path:
    """Run (or resume) the selected cells, then compare them. Returns comparison.md.
    ``extra`` applies to every run, ``pretrain_extra`` to the pretraining runs only;
    ``fractions``: the label-efficiency axis (see the module doc)."""
    m = Matrix(cohort, synthetic, ptbxl_dir, ckpt, extra, root=root,
               pretrain_extra=pretrain_extra)
    if fractions and not cells:
        cells = list(LABEL_EFFICIENCY_CELLS)
    chosen = select_cells(cells)
    kw = {"n_boot": n_boot} if n_boot is not None else {}
    pretrained: dict[str, str | None] = {"default": ckpt}  # pretraining keys -> checkpoint
    done: list[Path] = []
    for fraction in fractions or [None]:
        m.fraction = fraction
        by_cell = _run_cells(m, chosen, pretrained)
        done += by_cell.values()
        if {CLINICAL, CLINICAL_PLUS} <= set(by_cell):
            # incremental value of the ECG over age and sex: paired difference to the
            # clinical model on the same participants (what clinical readers ask first)
            incr = [by_cell[c] for c in (CLINICAL, CLINICAL_PLUS, PROPOSED) if c in by_cell]
            run_compare(incr, m.cells_root / "comparison_vs_clinical", reference=CLINICAL,
                        **kw)
    if fractions:  # grouped by fraction, each against scratch, and the curve
        return run_compare(done, m.root / "comparison", **kw)
    reference = PROPOSED if any(d.name == PROPOSED for d in done) else None
    return run_compare(done, m.root / "comparison", reference=reference, **kw)


def _run_cells(m: Matrix, chosen: dict[str, str], pretrained: dict[str, str | None]
               ) -> dict[str, Path]:
    """Run the cells of one matrix (one fraction); ``pretrained``: the pretraining
    checkpoints made so far by their keys (``default``: the shared one), reused across cells
    and fractions."""
    kind: str | None = None
    by_cell: dict[str, Path] = {}
    for cell, experiment in chosen.items():
        raw = OmegaConf.load(EXPERIMENTS_DIR / f"{experiment}.yaml") if experiment \
            else OmegaConf.create()
        cfg = m.finetune_config(cell, experiment, None)
        if cfg.task == "cox_baseline" and cfg.baseline.features == "biomarkers":
            kind = kind or survival_cache_kind(cfg)
            if kind != "ukb":
                log.warning(f"[matrix {m.tag}] cell {cell} skipped: the biomarker Cox model "
                            "reads the UK Biobank device measurements, which a "
                            f"{kind} cache does not have")
                continue
        cell_ckpt = None
        if uses_pretraining(cfg):
            # one pretraining per distinct set of keys, named by the first cell using it
            own = _pretrain_overrides(raw)
            key = "\n".join(own) or "default"
            if pretrained.get(key) is None:
                name = cell if own else "default"
                pretrained[key] = str(run_pretrain(m.pretrain_config(name, own))["checkpoint"])
            cell_ckpt = pretrained[key]
        where = f" (training fraction {m.fraction:g})" if m.fraction is not None else ""
        log.info(f"[matrix {m.tag}] cell {cell}{where}")
        by_cell[cell] = run_finetune(m.finetune_config(cell, experiment, cell_ckpt))
    return by_cell


def run_cohorts(cohorts: Sequence[str], synthetic: bool, cells: Sequence[str] | None = None,
                root: str | Path = "runs", n_boot: int | None = None, **kw) -> Path:
    """:func:`run_matrix` for each cohort, then one table of the paper's shape (one row per
    cell, columns per cohort) in ``<root>/matrix_all[_synthetic]/comparison``."""
    dirs: list[Path] = []
    for cohort in cohorts:
        run_matrix(cohort, synthetic, cells, root=root, n_boot=n_boot, **kw)
        m = Matrix(cohort, synthetic, root=root)
        dirs += [m.root / cell for cell in select_cells(cells) if (m.root / cell).is_dir()]
    out = Path(root) / f"matrix_all{'_synthetic' if synthetic else ''}" / "comparison"
    return run_compare(dirs, out, **({"n_boot": n_boot} if n_boot is not None else {}))
