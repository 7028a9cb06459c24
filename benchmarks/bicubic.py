"""The first external check: MATLAB-style bicubic on Set5/Set14 x4 against the published figures.

    python benchmarks/bicubic.py [--datasets-root DIR]

Writes benchmarks/results/bicubic.json and bicubic.md. Published: Set5 28.42 dB, Set14 26.00 dB.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from qnas_deploy.data import benchmark_pairs, resolve_dataset
from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets
from qnas_deploy.imresize import imresize

PUBLISHED = {"Set5": 28.42, "Set14": 26.00}
OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets-root")
    args = ap.parse_args()
    res = evaluate_sets(bicubic_upscaler(4), list(PUBLISHED), 4, args.datasets_root)
    rows = []
    for name, s in res["sets"].items():
        pairs = benchmark_pairs(resolve_dataset(name, args.datasets_root), 4)
        diffs = [np.abs(imresize(p.hr, 0.25).astype(int) - p.lr.astype(int)) for p in pairs]
        within1 = sum(int((d <= 1).sum()) for d in diffs) / sum(d.size for d in diffs)
        s["downscale_within_1_level"] = within1
        s["published_psnr_db"] = PUBLISHED[name]
        rows.append(f"| {name} | {s['mean']['psnr_db']:.3f} | {PUBLISHED[name]:.2f} | "
                    f"{s['mean']['psnr_db'] - PUBLISHED[name]:+.3f} | {s['mean']['ssim']:.4f} | {100 * within1:.2f}% |")
    res["machine"] = f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}"
    OUT.mkdir(exist_ok=True)
    (OUT / "bicubic.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# Bicubic x4 baseline (MATLAB-style imresize, Y channel, 4 px shaved)", "",
          "Command: `python benchmarks/bicubic.py`", f"Machine: {res['machine']}", "",
          "| set | PSNR (dB) | published | difference | SSIM | own downscale within 1 level of published LR |",
          "| --- | --- | --- | --- | --- | --- |", *rows, "",
          "Single-channel HR files are scored on their grey values, as the reference MATLAB scripts",
          "do (`size(im,3)==1`); scoring them on BT.601 Y instead adds 0.09 dB to the Set14 mean."]
    (OUT / "bicubic.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
