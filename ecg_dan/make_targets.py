"""Make variables -> experiment configs: ``make pretrain|finetune|ablations``.

    python -m ecg_dan.make_targets finetune DATA=synthetic COHORT=mi CKPT= SCRATCH= -- ARGS...

``DATA=synthetic`` adds the ``+synthetic`` overlay (and ``+cpu_finetune`` for finetuning:
the demo's short CPU settings); the paper configurations otherwise. Extra ``ARGS`` are
overlays and dotlist overrides applied last.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from ecg_dan.config import EXPERIMENTS_DIR, ConfigError, choices, experiments, load_config
from ecg_dan.jobs.data import PTBXL_HELP
from ecg_dan.jobs.finetune import run_finetune
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


def pretrain(v: dict[str, str], extra: list[str], model_overrides: list[str] | None = None,
             name: str | None = None):
    if _synthetic(v):
        exp, ov = "pretrain_short", ["+synthetic", "name=pretrain_synthetic"]
    else:
        if not v.get("PTBXL_DIR"):
            raise ConfigError(PTBXL_HELP)
        exp, ov = "pretrain", [f"data.ptbxl_dir={v['PTBXL_DIR']}"]
    if name:
        ov.append(f"name={name}")
    return run_pretrain(load_config(exp, [*ov, *(model_overrides or []), *extra]))


def _cohort(v: dict[str, str]) -> str:
    """COHORT=: a cohort with a paper config (``experiments/finetune_<cohort>.yaml``)."""
    cohort = v.get("COHORT") or "hyp"
    known = [c for c in choices("finetune.cohort") if f"finetune_{c}" in experiments()]
    if cohort not in known:
        raise ConfigError(f"COHORT={cohort}: expected one of {', '.join(known)}")
    return cohort


def finetune(v: dict[str, str], extra: list[str], experiment: str | None = None):
    cohort = _cohort(v)
    ov = []
    if _synthetic(v):
        ov += ["+synthetic", "+cpu_finetune", f"name=finetune_{cohort}_synthetic"]
    if v.get("SCRATCH"):
        ov.append("finetune.scratch=true")
    elif v.get("CKPT"):
        ov.append(f"finetune.ckpt={v['CKPT']}")
    if experiment:
        ov = [o for o in ov if not o.startswith("name=")]
        ov.append(f"finetune.cohort={cohort}")
    return run_finetune(load_config(experiment or f"finetune_{cohort}", [*ov, *extra]))


def ablations(v: dict[str, str], extra: list[str]) -> None:
    """Every experiments/ablations/*.yaml; architecture variants are pretrained first with
    the same pretraining config, so each is compared pretrained-vs-pretrained."""
    cohort = _cohort(v)
    paths = sorted((EXPERIMENTS_DIR / "ablations").glob("*.yaml"))
    if v.get("ABLATIONS"):
        wanted = [a.strip() for a in v["ABLATIONS"].split(",") if a.strip()]
        unknown = sorted(set(wanted) - {p.stem for p in paths})
        if unknown:
            raise ConfigError(f"ABLATIONS: unknown {unknown}; available: "
                              f"{', '.join(p.stem for p in paths)}")
        paths = [p for p in paths if p.stem in wanted]
    for path in paths:
        name = f"ablations/{path.stem}"
        raw = OmegaConf.load(path)
        model_ov = [f"model.{k}={val}" for k, val in (raw.get("model") or {}).items()]
        suffix = "_synthetic" if _synthetic(v) else ""
        run_name = [f"name=ablation_{path.stem}_{cohort}{suffix}"]
        if OmegaConf.select(raw, "finetune.scratch"):
            finetune({**v, "CKPT": "", "SCRATCH": "1"}, [*run_name, *extra], experiment=name)
            continue
        if not model_ov and v.get("CKPT"):
            ckpt = v["CKPT"]
        else:
            out = pretrain(v, extra, model_overrides=model_ov,
                           name=f"pretrain_ablation_{path.stem}{suffix}")
            ckpt = str(out["checkpoint"])
        finetune({**v, "CKPT": ckpt, "SCRATCH": ""}, [*run_name, *extra], experiment=name)


def main(argv: list[str] | None = None) -> int:
    from ecg_dan.cli import user_errors

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
