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


def pretrain_config(v: dict[str, str], extra: list[str],
                    model_overrides: list[str] | None = None, name: str | None = None):
    if _synthetic(v):
        exp, ov = "pretrain_short", ["+synthetic", "name=pretrain_synthetic"]
    else:
        if not v.get("PTBXL_DIR"):
            raise ConfigError(PTBXL_HELP)
        exp, ov = "pretrain", [f"data.ptbxl_dir={v['PTBXL_DIR']}"]
    if name:
        ov.append(f"name={name}")
    return load_config(exp, [*ov, *(model_overrides or []), *extra])


def pretrain(v: dict[str, str], extra: list[str], model_overrides: list[str] | None = None,
             name: str | None = None):
    return run_pretrain(pretrain_config(v, extra, model_overrides, name))


def _cohort(v: dict[str, str]) -> str:
    """COHORT=: a cohort with a paper config (``experiments/finetune_<cohort>.yaml``)."""
    cohort = v.get("COHORT") or "hyp"
    known = [c for c in choices("finetune.cohort") if f"finetune_{c}" in experiments()]
    if cohort not in known:
        raise ConfigError(f"COHORT={cohort}: expected one of {', '.join(known)}")
    return cohort


def finetune_config(v: dict[str, str], extra: list[str], ablation: str | None = None):
    """The cohort's paper config (``finetune_<cohort>``); an ablation's YAML is applied on
    top of it as an overlay (its own keys only), before the synthetic overlays."""
    cohort = _cohort(v)
    ov = [f"+ablations/{ablation}"] if ablation else []
    if _synthetic(v):
        ov += ["+synthetic", "+cpu_finetune"]
        if not ablation:
            ov.append(f"name=finetune_{cohort}_synthetic")
    if v.get("SCRATCH"):
        ov.append("finetune.scratch=true")
    elif v.get("CKPT"):
        ov.append(f"finetune.ckpt={v['CKPT']}")
    return load_config(f"finetune_{cohort}", [*ov, *extra])


def finetune(v: dict[str, str], extra: list[str], ablation: str | None = None):
    return run_finetune(finetune_config(v, extra, ablation))


def ablation_pretrain_overrides(raw) -> list[str]:
    """The variant's own pretraining: its YAML's ``model:`` and ``pretrain:`` keys. A variant
    that does not train the decoder (``pretrain.w_recon=0``) keeps the checkpoint with the
    lowest ``val/loss``: its ``val/recon_mse`` is still logged but says nothing."""
    ov = [f"{section}.{k}={val}" for section in ("model", "pretrain")
          for k, val in (raw.get(section) or {}).items()]
    if float(OmegaConf.select(raw, "pretrain.w_recon", default=1.0)) == 0:
        ov.append("checkpoint.monitor=val/loss")
    return ov


def ablations(v: dict[str, str], extra: list[str]) -> None:
    """Every experiments/ablations/*.yaml, finetuned with the cohort's paper config.

    A variant with ``model:`` or ``pretrain:`` keys is pretrained first with the paper's
    pretraining config plus those keys, so each is compared pretrained-vs-pretrained; the
    others share one pretraining (``CKPT=``, or one default run made once)."""
    cohort = _cohort(v)
    paths = sorted((EXPERIMENTS_DIR / "ablations").glob("*.yaml"))
    if v.get("ABLATIONS"):
        wanted = [a.strip() for a in v["ABLATIONS"].split(",") if a.strip()]
        unknown = sorted(set(wanted) - {p.stem for p in paths})
        if unknown:
            raise ConfigError(f"ABLATIONS: unknown {unknown}; available: "
                              f"{', '.join(p.stem for p in paths)}")
        paths = [p for p in paths if p.stem in wanted]
    suffix = "_synthetic" if _synthetic(v) else ""
    shared_ckpt = v.get("CKPT") or None
    for path in paths:
        raw = OmegaConf.load(path)
        run_name = [f"name=ablation_{path.stem}_{cohort}{suffix}"]
        if OmegaConf.select(raw, "finetune.scratch"):
            finetune({**v, "CKPT": "", "SCRATCH": "1"}, [*run_name, *extra], ablation=path.stem)
            continue
        pre_ov = ablation_pretrain_overrides(raw)
        if pre_ov:
            out = pretrain(v, extra, model_overrides=pre_ov,
                           name=f"pretrain_ablation_{path.stem}{suffix}")
            ckpt = str(out["checkpoint"])
        else:
            if shared_ckpt is None:
                out = pretrain(v, extra, name=f"pretrain_ablation_default{suffix}")
                shared_ckpt = str(out["checkpoint"])
            ckpt = shared_ckpt
        finetune({**v, "CKPT": ckpt, "SCRATCH": ""}, [*run_name, *extra], ablation=path.stem)


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
