"""Training throughput (patches/s) with 0, 1 and 2 loader worker processes.

    python benchmarks/loader_throughput.py [--entries espcn_w8a8,basic_lrtail_bicubic] [--rounds 5] [--iters 20]

The real training step (forward, L1 loss, backward, Adam) on BSD100 patches from the
memory-mapped cache, batch 16, LR patch 32, one torch thread (the workers take the other
core). Round robin: every round times ``--iters`` iterations of each worker count after two
untimed ones, so the counts share the machine's load; the median over rounds is reported.
Results: ``results/loader_throughput.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
WORKERS = (0, 1, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", default="espcn_w8a8,basic_lrtail_bicubic")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--datasets-root", default=None)
    args = ap.parse_args(argv)
    import torch

    from qnas_deploy.data import PatchDataset, cached_training_store, patch_loader
    from qnas_deploy.spaces import build_model
    from qnas_deploy.zoo import load_zoo
    sys.path.insert(0, str(Path(__file__).parent))
    from train_zoo import machine

    torch.set_num_threads(1)
    store = cached_training_store("BSD100", 4, args.datasets_root)
    res = {"command": "python benchmarks/loader_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "batch": 16, "patch": 32, "entries": {}}
    for name in args.entries.split(","):
        model = build_model(load_zoo(name)).train()
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        ds = PatchDataset(store, 4, 32, 0, 10 ** 9)
        rates = {w: [] for w in WORKERS}
        start = 0
        for _ in range(args.rounds):
            for w in WORKERS:
                it = iter(patch_loader(ds, 16, start, w))
                start += 16 * (args.iters + 2)
                for k in range(args.iters + 2):
                    if k == 2:
                        t0 = time.perf_counter()
                    lr, hr = next(it)
                    loss = (model(lr) - hr).abs().mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                rates[w].append(16 * args.iters / (time.perf_counter() - t0))
                del it
        res["entries"][name] = {str(w): {"median_patches_per_s": statistics.median(r), "rounds": r}
                                for w, r in rates.items()}
        print(name, {w: round(statistics.median(r), 1) for w, r in rates.items()}, file=sys.stderr, flush=True)
    (OUT / "loader_throughput.json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# Training throughput and loader workers", "", f"Command: `{res['command'].strip()}`  ",
          f"Machine: {res['machine']}; training step on 1 torch thread, batch 16, LR patch 32, BSD100 "
          "(memory-mapped cache); median of round-robin rounds.", "",
          "| entry | " + " | ".join(f"{w} workers" for w in WORKERS) + " |", "|---|" + "---|" * len(WORKERS)]
    for name, e in res["entries"].items():
        base = e["0"]["median_patches_per_s"]
        md.append(f"| {name} | " + " | ".join(
            f"{e[str(w)]['median_patches_per_s']:.0f} patches/s ({e[str(w)]['median_patches_per_s'] / base:.2f}x)"
            for w in WORKERS) + " |")
    (OUT / "loader_throughput.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
