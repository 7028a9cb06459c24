"""Search speed (the paper's Figure 8): seconds per search iteration (alpha step + weight
step) on the Basic supernet for the three BitMixer modes and bits {8}, {4,8}, {2,4,8}.
Writes benchmarks/results/search_speed.{json,md}.

    python benchmarks/search_speed.py [--iters 5] [--batch 4] [--patch 16] [--channels 36]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from qnas_deploy.search.supernet import MODES, Supernet

OUT = Path(__file__).parent / "results"


def per_iteration(mode: str, bits: tuple[int, ...], args) -> float:
    torch.manual_seed(0)
    net = Supernet("basic", bits, mode, channels=args.channels)
    net.train()
    opt_a = torch.optim.Adam(net.alpha_parameters(), lr=3e-4)
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=1e-3, momentum=0.9)
    lr = torch.rand(args.batch, 3, args.patch, args.patch)
    hr = torch.rand(args.batch, 3, 4 * args.patch, 4 * args.patch)
    times = []
    for i in range(args.iters + 1):
        t = time.perf_counter()
        for opt in (opt_a, opt_w):
            opt.zero_grad()
            torch.nn.functional.l1_loss(net(lr), hr).backward()
            opt.step()
        if i:  # the first iteration initialises quantizers
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--channels", type=int, default=36)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for bits in ((8,), (4, 8), (2, 4, 8)):
        row = {"bits": list(bits)}
        for mode in MODES:
            row[f"{mode}_s"] = per_iteration(mode, bits, args)
        row["san_vs_shared"] = row["san_s"] / row["shared_s"]
        rows.append(row)
        print(row, flush=True)
    res = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "torch": torch.__version__,
           "settings": vars(args), "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "search_speed.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# Search speed (Figure 8)", "", f"Command: `python benchmarks/search_speed.py {' '.join(sys.argv[1:])}`  ",
          f"Machine: {res['machine']}, torch {res['torch']}, 2 threads. Basic supernet, {args.channels} channels, "
          f"batch {args.batch}, LR patch {args.patch}; median seconds per iteration (alpha step + weight step) "
          f"over {args.iters} iterations.", "",
          "| bits | independent (s) | shared (s) | SAN (s) | SAN / shared |", "|---|---|---|---|---|"]
    md += [f"| {','.join(map(str, r['bits']))} | {r['independent_s']:.2f} | {r['shared_s']:.2f} | {r['san_s']:.2f} | "
           f"{r['san_vs_shared']:.2f} |" for r in rows]
    (OUT / "search_speed.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
