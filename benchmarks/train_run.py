"""A CPU-sized training run (issue 4): the zoo's mixed-precision Basic architecture on
BSD100 for a wall-time budget, scored on Set5 and Set14 against bicubic; and training
throughput (patches per second) of the Basic and RFDN zoo entries.

The number of iterations is fixed before training from a short throughput probe, so
that the run is an ordinary ``train`` run (cosine schedule over its whole length,
calibrated at the end) that fits the budget. Writes benchmarks/results/train_run.{json,md}.

    python benchmarks/train_run.py [--minutes 10] [--arch basic_mixed] [--datasets-root DIR] [--out-name STEM]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from qnas_deploy.data import load_pairs
from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets
from qnas_deploy.infer import grey_aware, torch_runner
from qnas_deploy.train import TrainConfig, train
from qnas_deploy.zoo import load_zoo

OUT = Path(__file__).parent / "results"


def throughput(name: str, pairs, work: Path, batch: int, patch: int, iters: int = 20) -> float:
    """Patches per second of training ``name`` (the second of two short epochs)."""
    rec = {}
    cfg = TrainConfig(epochs=2, iters=iters, batch=batch, patch=patch, optimizer="adam", lr=2e-3, calib_batches=1)
    train(load_zoo(name), pairs, work / f"{name}_probe.pt", cfg, progress=False, log=lambda m: None,
          on_epoch_end=lambda e, entry: rec.update({e: entry["patches_per_s"]}))
    return rec[2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--arch", default="basic_mixed")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--datasets-root", default=None)
    ap.add_argument("--out-name", default="train_run", help="Result file stem under benchmarks/results/.")
    args = ap.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="qnas-train-run-"))
    pairs = load_pairs("BSD100", 4, args.datasets_root, training=True)
    speeds = {n: throughput(n, pairs, work, args.batch, args.patch) for n in (args.arch, "rfdn_mixed")}
    print("patches/s", speeds, flush=True)
    # Validation every epoch and the final calibration take time too: leave them 8%.
    total_iters = int(args.minutes * 60 * 0.92 * speeds[args.arch] / args.batch)
    iters = max(1, total_iters // args.epochs)
    cfg = TrainConfig(epochs=args.epochs, iters=iters, batch=args.batch, patch=args.patch, optimizer="adam", lr=2e-3)
    val = load_pairs("Set5", 4, args.datasets_root, training=False)
    t0 = time.perf_counter()
    ck = train(load_zoo(args.arch), pairs, work / "model.pt", cfg, val_pairs=val, progress=False, log=print)
    wall = time.perf_counter() - t0
    model = evaluate_sets(grey_aware(torch_runner(ck.model)), ["Set5", "Set14"], 4, args.datasets_root)
    bic = evaluate_sets(bicubic_upscaler(4), ["Set5", "Set14"], 4, args.datasets_root)
    sets = {s: {"model_psnr_db": model["sets"][s]["mean"]["psnr_db"], "model_ssim": model["sets"][s]["mean"]["ssim"],
                "bicubic_psnr_db": bic["sets"][s]["mean"]["psnr_db"]} for s in ("Set5", "Set14")}
    for v in sets.values():
        v["gain_db"] = v["model_psnr_db"] - v["bicubic_psnr_db"]
    res = {"machine": platform.machine(), "torch": torch.__version__, "arch": args.arch, "config": vars(cfg),
           "train_wall_s": wall, "patches_per_s": speeds, "sets": sets}
    OUT.mkdir(exist_ok=True)
    (OUT / f"{args.out_name}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# Training run (CPU-sized)", "", f"Command: `python benchmarks/train_run.py {' '.join(sys.argv[1:])}`  ",
          f"Machine: {res['machine']}, torch {res['torch']}, 2 threads. `{args.arch}` trained on BSD100 "
          f"({cfg.epochs} epochs x {cfg.iters} iterations, batch {cfg.batch}, LR patch {cfg.patch}, Adam 2e-3, "
          f"cosine), calibrated at the end; {wall / 60:.1f} min of wall time.", "",
          "| set | model PSNR (dB) | SSIM | bicubic PSNR (dB) | gain (dB) |", "|---|---|---|---|---|"]
    md += [f"| {s} | {v['model_psnr_db']:.2f} | {v['model_ssim']:.4f} | {v['bicubic_psnr_db']:.2f} | "
           f"{v['gain_db']:+.2f} |" for s, v in sets.items()]
    md += ["", "Training throughput (patches per second, batch %d, LR patch %d):" % (args.batch, args.patch), ""]
    md += [f"- {n}: {v:.1f}" for n, v in speeds.items()]
    (OUT / f"{args.out_name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
