"""Known-answer check: the whole comparison matrix on the synthetic twin (short settings).

    python benchmarks/synthetic_matrix.py [--cohort hyp] [--cells proposed,clinical_cox,...]
        [--pretrain-epochs 4] [--events dense] [--setting hard] [--n-ukb 6000]
        [--root runs/bench]

The synthetic hazard is known (data_modules/synthetic/outcomes.py): it depends on the
simulated morphology, so ECG models should rank above the biomarker and clinical Cox
models, and every model below the oracle C-index printed with the proposed cell's results.
``--setting hard`` (data_modules/synthetic/settings.py) is the twin that can tell the
variants apart: subtler morphology, label noise in the reports, device noise, and a hazard
driven by morphology the device measurements miss.
Prints the comparison table (C-index, bootstrap CIs, paired differences to the proposed
model) and the wall time. A benchmark, not a test: it trains every cell.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ecg_dan.jobs.matrix import run_matrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", default="hyp", choices=("hyp", "mi"))
    ap.add_argument("--cells", default="", help="comma-separated cells (default: all)")
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--events", default="dense", choices=("dense", "paper"))
    ap.add_argument("--setting", default="standard", choices=("standard", "hard"))
    ap.add_argument("--n-ukb", type=int, default=None,
                    help="UK Biobank twin size (default: the PTB-XL twin's, 2000)")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--root", default="runs/bench")
    args = ap.parse_args()
    cells = [c for c in args.cells.split(",") if c] or None
    extra = ["logging.wandb=false", "trainer.enable_progress_bar=false",
             f"data.synthetic_events={args.events}", "pretrain.evaluate=false",
             f"data.synthetic_setting={args.setting}",
             *([f"data.synthetic_n_ukb={args.n_ukb}"] if args.n_ukb else []),
             f"finetune.n_boot={args.n_boot}"]
    pre = [f"trainer.max_epochs={args.pretrain_epochs}"]
    fin = [f"trainer.max_epochs={args.finetune_epochs}"]
    t0 = time.perf_counter()
    md = run_matrix(args.cohort, synthetic=True, cells=cells, extra=[*extra, *fin],
                    pretrain_extra=pre, n_boot=args.n_boot, root=args.root)
    wall = time.perf_counter() - t0
    print(Path(md).read_text())
    print(f"wall time: {wall / 60:.1f} min ({args.cohort}, {args.setting} twin, {args.events} "
          f"events, UKB n={args.n_ukb or 2000}, pretraining "
          f"{args.pretrain_epochs} epochs, finetuning {args.finetune_epochs} epochs)")


if __name__ == "__main__":
    main()
