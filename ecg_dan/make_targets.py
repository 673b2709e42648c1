"""Make variables -> experiment configs: ``make pretrain|finetune|ablations``.

``make ablations`` runs the whole comparison matrix of a cohort (ecg_dan/jobs/matrix.py).

    python -m ecg_dan.make_targets finetune DATA=synthetic COHORT=mi CKPT= SCRATCH= -- ARGS...

``CORPUS=mimic_ecg`` or ``CORPUS=ptbxl,mimic_ecg`` pretrains on MIMIC-IV-ECG (``MIMIC_DIR=``)
alone or with PTB-XL. ``DATA=synthetic`` adds the ``+synthetic`` overlay (and
``+cpu_finetune`` for finetuning: the demo's short CPU settings); the paper configurations
otherwise. Extra ``ARGS`` are overlays and dotlist overrides applied last.
"""

from __future__ import annotations

import sys

from ecg_dan.cli import user_errors
from ecg_dan.config import (
    PRETRAIN_CORPORA,
    ConfigError,
    finetune_cohorts,
    finetune_experiment,
    load_config,
    paper_cohorts,
)
from ecg_dan.jobs.data import MIMIC_HELP, PTBXL_HELP
from ecg_dan.jobs.finetune import run_finetune
from ecg_dan.jobs.matrix import parse_fractions, run_cohorts, run_matrix
from ecg_dan.jobs.pretrain import run_pretrain


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        head, extra = argv[:i], argv[i + 1:]
    else:
        head, extra = argv, []
    make_vars = dict(a.split("=", 1) for a in head if "=" in a)
    return make_vars, extra


def _synthetic(v: dict[str, str]) -> bool:
    return v.get("DATA") == "synthetic"


def _corpora(v: dict[str, str]) -> list[str]:
    """CORPUS=: pretraining corpora, comma-separated (default ptbxl), e.g. ptbxl,mimic_ecg."""
    corpora = [c.strip() for c in (v.get("CORPUS") or "ptbxl").split(",") if c.strip()]
    unknown = [c for c in corpora if c not in PRETRAIN_CORPORA]
    if not corpora or unknown:
        raise ConfigError(f"CORPUS={v.get('CORPUS')}: expected one or more (comma-separated) "
                          f"of {', '.join(PRETRAIN_CORPORA)}")
    return corpora


def pretrain_config(v: dict[str, str], extra: list[str]):
    """The paper's pretraining (``pretrain``; ``pretrain_short`` + ``+synthetic`` with
    DATA=synthetic) on the CORPUS= corpora; a run on other corpora than PTB-XL is named
    ``pretrain_<corpora>[_synthetic]``."""
    corpora = _corpora(v)
    ov = [] if corpora == ["ptbxl"] else [f"pretrain.corpora=[{','.join(corpora)}]"]
    suffix = "" if corpora == ["ptbxl"] else "_" + "_".join(corpora)
    if _synthetic(v):
        exp = "pretrain_short"
        ov += ["+synthetic", f"name=pretrain{suffix}_synthetic"]
    else:
        exp = "pretrain"
        if "ptbxl" in corpora:
            if not v.get("PTBXL_DIR"):
                raise ConfigError(PTBXL_HELP)
            ov.append(f"data.ptbxl_dir={v['PTBXL_DIR']}")
        if "mimic_ecg" in corpora:
            if not v.get("MIMIC_DIR"):
                raise ConfigError(MIMIC_HELP)
            ov.append(f"data.mimic_dir={v['MIMIC_DIR']}")
        if suffix:
            ov.append(f"name=pretrain{suffix}")
    return load_config(exp, [*ov, *extra])


def pretrain(v: dict[str, str], extra: list[str]):
    return run_pretrain(pretrain_config(v, extra))


def _cohort(v: dict[str, str]) -> str:
    """COHORT=: a cohort with a paper config (``experiments/finetune_<cohort>.yaml``)."""
    cohort = v.get("COHORT") or "hyp"
    known = finetune_cohorts()
    if cohort not in known:
        raise ConfigError(f"COHORT={cohort}: expected one of {', '.join(known)}")
    return cohort


def finetune_config(v: dict[str, str], extra: list[str]):
    """The cohort's paper config (``finetune_<cohort>``), with the synthetic overlays. The run
    is named ``finetune_<cohort>[_scratch][_synthetic]``: a run from scratch and one from a
    checkpoint do not share a run directory (the second would be refused as a changed
    config); ``name=`` in ``ARGS`` still wins."""
    cohort = _cohort(v)
    name = finetune_experiment(cohort)
    ov = []
    if v.get("SCRATCH"):
        ov.append("finetune.scratch=true")
        name += "_scratch"
    elif v.get("CKPT"):
        ov.append(f"finetune.ckpt={v['CKPT']}")
    if _synthetic(v):
        ov += ["+synthetic", "+cpu_finetune"]
        name += "_synthetic"
    return load_config(finetune_experiment(cohort), [*ov, f"name={name}", *extra])


def finetune(v: dict[str, str], extra: list[str]):
    return run_finetune(finetune_config(v, extra))


def ablations(v: dict[str, str], extra: list[str]) -> None:
    """The whole comparison matrix of a cohort (ablations + baselines), then one table:
    see ecg_dan/jobs/matrix.py. ``ABLATIONS=a,b`` selects cells; ``COHORT=all`` runs the
    paper's UK Biobank cohorts' matrices (hyp, mi) and joins them in one table, columns per
    cohort; ``COHORT=code15`` runs the matrix on a cohort cache (cells that need the UK
    Biobank device measurements are skipped). ``FRACTIONS=0.05,0.1,0.25,1`` runs the cells
    at each fraction of the training folds (label efficiency; default cells: the proposed
    model, scratch, the two encoder probes and the clinical Cox model)."""
    cells = [a.strip() for a in (v.get("ABLATIONS") or "").split(",") if a.strip()]
    kw = {"ptbxl_dir": v.get("PTBXL_DIR") or None, "ckpt": v.get("CKPT") or None,
          "extra": extra, "fractions": parse_fractions(v.get("FRACTIONS"))}
    if v.get("COHORT") == "all":
        run_cohorts(paper_cohorts(), _synthetic(v), cells or None, **kw)
    else:
        run_matrix(_cohort(v), _synthetic(v), cells or None, **kw)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    target, rest = argv[0], argv[1:]
    make_vars, extra = _parse(rest)
    try:
        {"pretrain": pretrain, "finetune": finetune, "ablations": ablations}[target](
            make_vars, extra)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
