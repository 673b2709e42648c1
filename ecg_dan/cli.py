"""``ecg-dan`` command line: info, synth, cache, pretrain, finetune, evaluate, compare,
explain, report, export, predict, import-weights, demo.

Heavy imports (torch, Lightning, the data readers' numpy/pandas/h5py) happen inside each
command so ``ecg-dan --help`` stays fast (tests/test_cli.py checks it). Expected user
errors (bad config, bad data, missing file, refused checkpoint) print one line and exit 2;
anything else is a bug and keeps its traceback. ``--debug`` shows tracebacks for all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_modules.errors import DataError
from ecg_dan import __version__
from ecg_dan.config import (
    ConfigError,
    DataConfig,
    choices,
    load_config,
    model_config,
)
from ecg_dan.log import get_logger

# ``ecg-dan synth --format`` choices (data_modules/synthetic/formats.py; listed here so
# ``--help`` does not import numpy; tests/test_cli.py checks the two agree)
SYNTH_FORMATS = ("ptbxl+ukb", "code15", "samitrop", "mimic", "muse", "cohort")

OVERRIDES_HELP = ("+overlay names (e.g. +synthetic, +tiny, +ddp_cpu) and dotlist overrides "
                  "(e.g. trainer.max_epochs=5)")


def _add_experiment_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("experiment", nargs="?", default=default,
                   help=f"experiment YAML name under experiments/ or a path (default: {default})")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    import lightning
    import torch
    import torchmetrics

    from ecg_dan.models import baseline_table, parameter_table  # deferred: torch
    from ecg_dan.models.registry import model_names  # deferred: torch

    print(f"ecg-dan {__version__} | python {platform.python_version()} | torch {torch.__version__}"
          f" | lightning {lightning.__version__} | torchmetrics {torchmetrics.__version__}")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"device: CUDA x{torch.cuda.device_count()} ({names})")
    else:
        print(f"device: CPU ({torch.get_num_threads()} threads), no CUDA")
    overrides = list(args.overrides)
    if not any(o.startswith("name=") for o in overrides):
        overrides.append("name=info")
    cfg = load_config(args.experiment, overrides)
    mc = model_config(cfg)
    print(f"registered models: {', '.join(model_names())}")
    print(f"model config: {mc}")
    print(parameter_table(mc))
    print("\nbaselines (docs/method.md section 7), with this model config's latent_dim:")
    print(baseline_table(mc))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    # deferred: numpy, pandas, wfdb (the synthetic writers)
    from data_modules.synthetic.formats import FORMATS

    if args.n_ukb is not None and args.format != "ptbxl+ukb":
        raise ConfigError(f"--n-ukb sizes the UK Biobank part of --format ptbxl+ukb; "
                          f"--format {args.format} is sized by --n")
    kw = {"n_ukb": args.n_ukb} if args.n_ukb is not None else {}
    paths = FORMATS[args.format](args.out, n=args.n, seed=args.seed, events=args.events,
                                 setting=args.setting, **kw)
    for k, v in paths.items():
        print(f"{k}: {v}")
    return 0


def _shard(text: str):  # -> data_modules.cache.Shard
    """``--shard K/N`` parsed (a usage error when malformed)."""
    from data_modules.cache.shard import Shard  # deferred: data_modules.cache loads h5py

    try:
        return Shard.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_shard_arg(c: argparse.ArgumentParser) -> None:
    """``--shard K/N`` of a ``cache`` subcommand (its builder takes ``shard=args.shard``)."""
    c.add_argument("--shard", type=_shard, default="0/1", metavar="K/N",
                   help="build part K (0-based) of N of the source, for `ecg-dan cache merge` "
                        "(docs/scaling.md; default: the whole source)")


def cmd_cache(args: argparse.Namespace) -> int:
    if args.kind == "merge":
        from data_modules.cache.merge import merge_caches  # deferred: h5py, numpy

        merge_caches(args.parts, args.out)
    elif args.kind == "ptbxl":
        # deferred: numpy, pandas, h5py, wfdb, neurokit2 (the PTB-XL reader)
        from data_modules.sources.ptbxl import build_ptbxl_cache

        build_ptbxl_cache(args.root, args.out, strips=args.strips,
                          ptbxl_plus_dir=args.ptbxl_plus, workers=args.workers,
                          shard=args.shard)
    elif args.kind in ("code15", "samitrop"):
        from data_modules.sources.code15 import build_code15_cache  # deferred: numpy, h5py

        build_code15_cache(args.root, args.out, time_unit=args.time_unit, workers=args.workers,
                           shard=args.shard, source=args.kind, mv_per_unit=args.mv_per_unit)
    elif args.kind == "mimic":
        from data_modules.sources.mimic_ecg import build_mimic_cache  # deferred: the reader

        build_mimic_cache(args.root, args.out, workers=args.workers, shard=args.shard)
    elif args.kind == "cohort":
        from data_modules.sources.cohort_table import build_cohort_cache  # deferred: pandas

        build_cohort_cache(args.ecgs, args.table, args.out, time_unit=args.time_unit,
                           workers=args.workers, shard=args.shard)
    else:
        # deferred: numpy, pandas, h5py (the UK Biobank reader)
        from data_modules.sources.ukb import build_ukb_cache

        build_ukb_cache(args.xml_dir, args.outcomes, args.out, time_unit=args.time_unit,
                        strips=args.strips != "none", workers=args.workers,
                        shard=args.shard)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    cfg = load_config(args.experiment, args.overrides)  # a config error: before the imports
    from ecg_dan.jobs.pretrain import run_pretrain  # deferred: torch, Lightning

    run_pretrain(cfg)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    cfg = load_config(args.experiment, args.overrides)  # a config error: before the imports
    from ecg_dan.jobs.finetune import run_finetune  # deferred: torch, Lightning

    run_finetune(cfg)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.ckpt and args.target:  # with --ckpt, the first positional is an override
        args.overrides = [args.target, *args.overrides]
    target = args.ckpt or args.target
    if not target:
        what = "--ckpt PATH" if args.what == "pretrain" else "RUN_DIR"
        raise SystemExit(f"ecg-dan evaluate {args.what}: give {what}")
    if args.what == "pretrain":
        from ecg_dan.evaluation.few_shot import parse_sizes  # deferred: numpy, sklearn
        from ecg_dan.jobs.evaluate import evaluate_pretrain  # deferred: torch, Lightning

        sizes = parse_sizes(args.few_shot) if args.few_shot else None
        evaluate_pretrain(target, overrides=args.overrides, few_shot=sizes,
                          few_shot_draws=int(args.few_shot_draws))
    else:
        from ecg_dan.jobs.evaluate import evaluate_finetune  # deferred: torch, Lightning
        from ecg_dan.run_dir import RunDir  # deferred: pandas, omegaconf

        cfg = RunDir(target).load_config(args.overrides)
        evaluate_finetune(Path(target), cfg=cfg)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ecg_dan.jobs.compare import run_compare  # deferred: torch, pandas, matplotlib

    run_compare(args.run_dirs, out_dir=args.out, reference=args.reference, n_boot=args.n_boot,
                seed=args.seed)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from ecg_dan.jobs.explain import run_explain  # deferred: torch, Lightning, matplotlib

    out = run_explain(args.run_dir, eids=args.eid or (),
                      max_gradient_subjects=args.max_gradient_subjects, seed=args.seed)
    print(f"figures and explain.md in {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ecg_dan.jobs.report import run_report  # deferred: pandas, Lightning (W&B logging)

    print(run_report(args.target, args.out))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ecg_dan.jobs.predict import run_export  # deferred: torch, Lightning

    print(run_export(args.run_dir, args.out, args.format, overwrite=args.overwrite))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ecg_dan.jobs.predict import run_predict  # deferred: torch, Lightning

    summary = run_predict(args.model, args.inputs, args.out, horizons=args.horizons,
                          workers=args.workers, batch_size=args.batch_size,
                          threads=args.threads, progress=not args.no_progress,
                          explain=args.explain, overwrite=args.overwrite)
    print(summary["report"], file=sys.stderr)
    return 0


def cmd_import_weights(args: argparse.Namespace) -> int:
    from ecg_dan.import_weights import import_authors  # deferred: torch

    import_authors(args.file, args.out)
    print(f"{args.out}: use it as finetune.ckpt={args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ecg_dan.jobs.demo import run_demo  # deferred: torch, Lightning

    run_demo(args.overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecg-dan", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of every error, not only of bugs")
    sub = parser.add_subparsers(dest="command", required=True)
    strips = [str(c) for c in choices("data.strips")]

    p = sub.add_parser("info", help="versions, device and the model's parameter table")
    _add_experiment_args(p, None)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("synth", help="write synthetic PTB-XL- and UK Biobank-format data")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--format", default="ptbxl+ukb", choices=SYNTH_FORMATS,
                   help="which source format's twin to write (default: PTB-XL + UK Biobank)")
    p.add_argument("--n", type=int, default=DataConfig.synthetic_n)
    p.add_argument("--n-ukb", type=int, default=None, help="UK Biobank participants (default n)")
    p.add_argument("--seed", type=int, default=DataConfig.synthetic_seed)
    p.add_argument("--events", choices=choices("data.synthetic_events"),
                   default=DataConfig.synthetic_events)
    p.add_argument("--setting", choices=choices("data.synthetic_setting"),
                   default=DataConfig.synthetic_setting,
                   help="hard: subtler morphology, label noise, device noise, a hazard the "
                        "device measurements miss (data_modules/synthetic/settings.py)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("cache", help="build an HDF5 cache (PTB-XL, UK Biobank, CODE-15%%, "
                       "SaMi-Trop, MIMIC-IV-ECG, your own cohort), or merge the parts of a "
                       "sharded build")
    csub = p.add_subparsers(dest="kind", required=True)
    c = csub.add_parser("ptbxl")
    c.add_argument("--root", required=True, type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--strips", choices=strips, default="none",
                   help="also cache the 10 s strips at this sampling rate")
    c.add_argument("--ptbxl-plus", type=Path, default=None, help="PTB-XL+ median beats")
    c.add_argument("--workers", type=int, default=2)
    _add_shard_arg(c)
    c = csub.add_parser("mimic", help="MIMIC-IV-ECG as a pretraining corpus (its folder holds "
                        "record_list.csv, machine_measurements.csv and files/)")
    c.add_argument("--root", required=True, type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--workers", type=int, default=2)
    _add_shard_arg(c)
    c = csub.add_parser("ukb")
    c.add_argument("--xml-dir", required=True, type=Path)
    c.add_argument("--outcomes", required=True, type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--time-unit", choices=choices("data.time_unit"),
                   default=DataConfig.time_unit)
    c.add_argument("--strips", choices=["none", "500"], default="none",
                   help="also cache the 10 s strips (UK Biobank strips are 500 Hz)")
    c.add_argument("--workers", type=int, default=2)
    _add_shard_arg(c)
    for name, what in (("code15", "CODE-15%% (exams.csv + exams_part*.hdf5)"),
                       ("samitrop", "SaMi-Trop (exams.csv + exams.hdf5)")):
        c = csub.add_parser(name, help=f"{what} -> survival cohort cache (all-cause death)")
        c.add_argument("--root", required=True, type=Path, help="the folder of exams.csv")
        c.add_argument("--out", required=True, type=Path)
        c.add_argument("--time-unit", choices=choices("data.time_unit"),
                       default=DataConfig.time_unit)
        c.add_argument("--workers", type=int, default=2)
        _add_shard_arg(c)
        c.add_argument("--mv-per-unit", type=float, default=1.0,
                       help="mV per stored unit (default 1: the values are mV, as the "
                            "PhysioNet Challenge 2025 reads them; docs/data_formats.md)")
    c = csub.add_parser("cohort", help="your own cohort: a table (id, ecg_file, time, event, "
                        "age, sex, covariates) and a folder of WFDB / CardioSoft / MUSE files "
                        "(docs/data_formats.md)")
    c.add_argument("--ecgs", required=True, type=Path, help="folder the ecg_file paths are in")
    c.add_argument("--table", required=True, type=Path, help="the cohort table (CSV)")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--time-unit", choices=choices("data.time_unit"),
                   default=DataConfig.time_unit, help="the cache's time unit")
    c.add_argument("--workers", type=int, default=2)
    _add_shard_arg(c)
    c = csub.add_parser("merge", help="join the parts of a sharded build (--shard K/N) into "
                        "the cache the whole build writes (docs/scaling.md)")
    c.add_argument("parts", nargs="+", type=Path, metavar="PART",
                   help="the part caches 0/N .. N-1/N, in any order")
    c.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("pretrain", help="LLM-informed alignment pretraining")
    _add_experiment_args(p, "pretrain_short")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="survival finetuning under cross-validation (also the "
                       "Cox baselines: experiments with task=cox_baseline, e.g. "
                       "baselines/biomarker_cox)")
    _add_experiment_args(p, "finetune_hyp")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="evaluate a pretrained checkpoint or a finetuning run")
    p.add_argument("what", choices=("pretrain", "finetune"))
    p.add_argument("target", nargs="?", help="checkpoint (pretrain) or run directory (finetune)")
    p.add_argument("--ckpt", default=None, help="pretraining checkpoint (same as target)")
    p.add_argument("--few-shot", default=None, metavar="SIZES",
                   help="pretrain: also the few-shot probe curve at these labels per class, "
                        "e.g. 5,10,20,all (probe_few_shot.{md,csv,json,png})")
    p.add_argument("--few-shot-draws", default="10", metavar="N",
                   help="random labelled subsets per size (default 10)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.ptbxl_dir=...")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="one comparison table (paired bootstrap, forest plot) "
                       "of several finetuning runs from their saved predictions")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--reference", default=None, metavar="NAME_OR_DIR",
                   help="run the differences are taken against (default: the run of the "
                        "proposed model ecg_dan, else the first run)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the runs' common parent / comparison)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("explain", help="attention maps of a finetuning run (cross-lead and "
                       "temporal, high- vs low-risk groups, latent PCA, Kaplan-Meier), each "
                       "participant scored by the fold model that held it out")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--eid", type=int, action="append", default=None,
                   help="also draw this participant's ECG (repeatable; default: the "
                        "highest-risk participant)")
    p.add_argument("--max-gradient-subjects", type=int, default=32,
                   help="temporal gradient maps for at most this many participants per risk "
                        "group (a seeded random sample; one backward pass per token each)")
    p.add_argument("--seed", type=int, default=0, help="seed of that sample")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("report", help="one self-contained HTML file (figures embedded, "
                       "viewable offline) of a finetuning run or of a comparison / matrix "
                       "folder: tables, C-index with CIs, calibration, decision curve, "
                       "Kaplan-Meier, attention figures, config, versions")
    p.add_argument("target", type=Path, metavar="RUN_DIR|MATRIX_DIR",
                   help="a run directory, or a folder with comparison.md in it or its "
                        "subfolders (ecg-dan compare output, runs/matrix_<cohort>)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.html",
                   help="where to write it (default: RUN_DIR|MATRIX_DIR/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="one portable model file (safetensors + JSON manifest) "
                       "from a finetuning run: every fold model, Breslow baselines, reference "
                       "risks")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                   help="a finetuning run (or, for --format onnx, its .safetensors file)")
    p.add_argument("--out", required=True, type=Path, metavar="MODEL_FILE",
                   help="e.g. model.safetensors, or model.onnx")
    p.add_argument("--format", choices=("safetensors", "onnx"), default=None,
                   help="safetensors (PyTorch) or onnx (ONNX Runtime, any language; "
                        "docs/deployment.md); default: from the --out suffix")
    p.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_FILE")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="score new ECGs (WFDB, CardioSoft or MUSE XML, folders of "
                       "them, PTB-XL / UK Biobank / cohort caches) with an exported model or a "
                       "run directory (which scores its own cohort's participants out of fold)")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_FILE|RUN_DIR",
                   help="a .safetensors model file, a .onnx file (run with ONNX Runtime) or a "
                        "finetuning run directory")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"),
                   help="CSV of the scores (JSON and <stem>_skipped.csv beside it)")
    p.add_argument("--horizons", type=float, nargs="+", default=None, metavar="T",
                   help="absolute-risk horizons in the run's time unit (default: the run's "
                        "finetune.horizons, as in its calibration table)")
    p.add_argument("--workers", type=int, default=2, help="processes reading the inputs")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None,
                   help="torch (and ONNX Runtime) CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--explain", action="store_true",
                   help="also draw each ECG's attention figure into <out stem>_explain/ "
                        "(~1-3 s per ECG on a CPU)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (never inside a run directory)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("import-weights", help="another code's pretrained weights as an "
                       "ecg-dan pretraining checkpoint (authors: the released PTB-XL "
                       "checkpoint of cherise215/LLM-ECG-Dual-Attention); only tensors and "
                       "plain data are read from the file")
    p.add_argument("source", choices=("authors",), help="whose checkpoint FILE is")
    p.add_argument("file", type=Path, metavar="FILE",
                   help="e.g. pretrained_weights/model/ECG2Text/checkpoint_best_loss-v2.ckpt")
    p.add_argument("--out", required=True, type=Path, metavar="PRETRAIN_CKPT")
    p.set_defaults(func=cmd_import_weights)

    p = sub.add_parser("demo", help="synthetic data -> pretrain -> finetune -> evaluation")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p.set_defaults(func=cmd_demo)
    return parser


#: ``evaluate``'s options with a value, lifted out of argv before parsing.
_EVALUATE_OPTIONS = ("--ckpt", "--few-shot", "--few-shot-draws")


def _lift_options(argv: list[str], names: tuple[str, ...] = _EVALUATE_OPTIONS
                  ) -> tuple[list[str], dict[str, str]]:
    """Take ``--name X`` / ``--name=X`` out of argv: argparse cannot match overrides that
    follow them. Returns the rest and {name: value}."""
    out, found, i = [], {}, 0
    while i < len(argv):
        a = argv[i]
        if a in names and i + 1 < len(argv):
            found[a], i = argv[i + 1], i + 2
            continue
        key = a.split("=", 1)[0]
        if "=" in a and key in names:
            found[key] = a.split("=", 1)[1]
        else:
            out.append(a)
        i += 1
    return out, found


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe the user's input, not a bug: printed as one line."""
    # OSError: a full disk, a missing or unreadable file, a permission problem
    errors: tuple[type[BaseException], ...] = (ConfigError, DataError, OSError)
    # a CheckpointError comes from ecg_dan.checkpoints, so only once it is imported: a config
    # error need not import torch and Lightning to be reported
    checkpoints = sys.modules.get("ecg_dan.checkpoints")
    return errors + (checkpoints.CheckpointError,) if checkpoints else errors


def main(argv: list[str] | None = None) -> int:
    get_logger()  # progress and reports of the jobs and cache builders, from rank 0
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    lifted: dict[str, str] = {}
    if argv[:1] == ["evaluate"]:
        argv, lifted = _lift_options(argv)
    args = build_parser().parse_args(argv)
    for name, value in lifted.items():
        setattr(args, name.lstrip("-").replace("-", "_"), value)
    try:
        return args.func(args)
    except user_errors() as e:
        if debug:
            raise
        print(f"ecg-dan: {_error_kind(e)}: {_error_text(e)}", file=sys.stderr)
        return 2


#: The kind a user error is reported as, by the class it is (or derives from).
ERROR_KINDS = {"ConfigError": "config error", "DataError": "data error",
               "CheckpointError": "checkpoint error", "FileNotFoundError": "file not found",
               "ModelFileError": "model file error", "RunDirError": "run directory error"}


def _error_kind(e: BaseException) -> str:
    for cls in type(e).__mro__:
        if cls.__name__ in ERROR_KINDS:
            return ERROR_KINDS[cls.__name__]
    return "error"


def _error_text(e: BaseException) -> str:
    """The message on one line (a library's multi-line message joined)."""
    return " ".join(part.strip() for part in str(e).splitlines() if part.strip())


if __name__ == "__main__":
    sys.exit(main())
