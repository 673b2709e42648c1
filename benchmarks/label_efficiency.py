"""Does the pretraining help, and at how many labelled outcomes? The label-efficiency curve
on the synthetic twin with its positive and negative controls, at a size that fits a 2-core
machine (docs/benchmarks.md "Label efficiency").

    python benchmarks/label_efficiency.py [--cohort hyp] [--setting hard]
        [--fractions 0.05,0.25,1] [--pretrain-epochs 4] [--finetune-epochs 10]
        [--cells proposed,scratch,...] [--root runs/bench_le]

The same runs as ``make ablations DATA=synthetic FRACTIONS=... ARGS=...`` with the
pretraining epochs set apart from the finetuning ones. Cells (default): the proposed model
(pretrained: reconstruction + alignment to the records' own reports) and the network from
scratch at every fraction; the survival probes (Cox on the frozen encoder's z) of the
pretrained encoder, of a random encoder and of the encoder aligned to shuffled reports; the
clinical Cox model. On the hard twin the reports name the morphology that drives the
hazard (Q waves, ST-T changes): the positive control is the proposed model and the
pretrained probe above scratch and the random probe at small fractions; the negative
control is the shuffled-reports encoder, whose alignment can teach nothing.
Prints the label-efficiency table (``compare``'s) and the wall time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ecg_dan.jobs.matrix import parse_fractions, run_matrix

CELLS = ("proposed,scratch,probe_pretrained,probe_random,probe_shuffled_reports,"
         "clinical_cox")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", default="hyp", choices=("hyp", "mi"))
    ap.add_argument("--setting", default="hard", choices=("standard", "hard"))
    ap.add_argument("--events", default="dense", choices=("dense", "paper"))
    ap.add_argument("--fractions", default="0.05,0.25,1")
    ap.add_argument("--cells", default=CELLS)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--seeds", default="", help="finetuning seeds, comma-separated "
                    "(default: the +cpu_finetune overlay's, 42)")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--root", default="runs/bench_le")
    args = ap.parse_args()
    extra = ["logging.wandb=false", "trainer.enable_progress_bar=false",
             f"data.synthetic_setting={args.setting}", f"data.synthetic_events={args.events}",
             "pretrain.evaluate=false", f"finetune.n_boot={args.n_boot}",
             *([f"finetune.seeds=[{args.seeds}]"] if args.seeds else [])]
    t0 = time.perf_counter()
    md = run_matrix(args.cohort, synthetic=True, cells=args.cells.split(","),
                    extra=[*extra, f"trainer.max_epochs={args.finetune_epochs}"],
                    pretrain_extra=[f"trainer.max_epochs={args.pretrain_epochs}"],
                    n_boot=args.n_boot, root=args.root,
                    fractions=parse_fractions(args.fractions))
    wall = time.perf_counter() - t0
    print(Path(md).read_text())
    print(f"wall time: {wall / 60:.1f} min ({args.cohort}, {args.setting} twin, fractions "
          f"{args.fractions}, seeds {args.seeds or 42}, pretraining {args.pretrain_epochs} epochs, "
          f"finetuning {args.finetune_epochs} epochs at fraction 1)")


if __name__ == "__main__":
    main()
