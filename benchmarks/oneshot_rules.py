"""One-shot supernet training rules and estimators against stand-alone training (Kendall tau), mobile space.

    python benchmarks/oneshot_rules.py --label "sandwich, warm-up" [--iters 3282] [--random-paths 2]
        [--warmup 0.02] [--lr 2e-3] [--rule sandwich] [--finetune STEPS [--ft-lr 1e-3] [--ft-warmup 0.05]]
        [--scratch]

The supernet of ``search_strategies.py --space mobile`` (32 channels, 4 blocks, bits 4/8, the
space's widths, bicubic anchor, batch 8, LR patch 24, one thread) trained by ``--rule`` for
``--iters`` steps; its estimates of the study's 12 random subnets (the same draw, seed 1)
against their stand-alone scores, which that study trained and keeps in
``runs/strategies_mobile/sub{k}.pt`` (run it first). 3282 sandwich steps (4 paths each)
are the 13129 paths of the study's single-path supernet. ``--finetune STEPS``: each subnet's
inherited weights are fine-tuned that many steps before it is scored (``search/oneshot.py``
``Finetune``); ``--scratch``: the same fine-tune from freshly initialised weights instead (the
control: what the supernet's weights add). Each label's result is added to
``results/oneshot_rules.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--iters", type=int, default=3282)
    ap.add_argument("--rule", default="sandwich", choices=("sandwich", "single"))
    ap.add_argument("--random-paths", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=0.02)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--finetune", type=int, default=0, help="fine-tune steps per subnet before scoring")
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--ft-warmup", type=float, default=0.05)
    ap.add_argument("--scratch", action="store_true", help="fine-tune from initialised weights, not inherited ones")
    ap.add_argument("--work", default="runs/oneshot_rules")
    ap.add_argument("--standalone", default="runs/strategies_mobile")
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    from scipy.stats import kendalltau

    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.data import PatchDataset, cached_training_store, load_pairs, patch_loader
    from qnas_deploy.calibrate import calibrate
    from qnas_deploy.search.oneshot import Finetune, OneShotConfig, estimate_psnr, finetune, train_oneshot
    from qnas_deploy.spaces import build_model, get_space
    from qnas_deploy.spec import ArchSpec, LayerSpec
    from qnas_deploy.train import validate

    torch.set_num_threads(1)
    sp = get_space("mobile")
    oc = OneShotConfig(space="mobile", bits=(4, 8), anchor="bicubic", widths=tuple(sp.width_choices),
                       iters=args.iters, batch=8, patch=24, rule=args.rule, random_paths=args.random_paths,
                       warmup=args.warmup, lr=args.lr, channels=32, blocks=4)
    store = cached_training_store("BSD100", 4, None)
    val = load_pairs("Set5", 4, None, training=False)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{args.rule}_{args.iters}_{args.random_paths}_{args.warmup}_{args.lr}"
    t = time.perf_counter()
    net = train_oneshot(oc, store, work / f"{tag}.pt", progress=False, log=lambda m: print(m, file=sys.stderr))
    seconds = time.perf_counter() - t
    rng = np.random.default_rng(1)  # search_strategies.py's draw
    calib = [b for b, _ in patch_loader(PatchDataset(store, 4, 24, 7, 32), 8)]
    ft = Finetune(iters=args.finetune, lr=args.ft_lr, warmup=args.ft_warmup)
    est, real = [], []
    t = time.perf_counter()
    for k in range(12):
        layers = []
        for s, m in zip(net.slots, net.mixed.values()):
            b = int(rng.choice(m.bits))
            layers.append(LayerSpec(s.name, m.ops[rng.integers(len(m.ops))], b, b,
                                    int(rng.choice(m.widths)) if m.widths else None))
        spec = ArchSpec(space="mobile", scale=4, channels=32, blocks=4, layers=tuple(layers), adq=sp.has_adq,
                        anchor="bicubic")
        if args.scratch:
            torch.manual_seed(0)
            model = build_model(spec)
            calibrate(model, calib, exact_adds=False)
            finetune(model, store, 4, ft)
            calibrate(model, calib, exact_adds=False)
            est.append(validate(model.eval(), val, 4))
        else:
            est.append(estimate_psnr(net, spec, calib, val, ft, store))
        real.append(validate(load_checkpoint(Path(args.standalone) / f"sub{k}.pt").model, val, 4))
    estimate_seconds = (time.perf_counter() - t) / 12
    tau = kendalltau(est, real)
    path = OUT / "oneshot_rules.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    res[args.label] = {"command": "python benchmarks/oneshot_rules.py " + " ".join(argv or sys.argv[1:]),
                       "config": {k: getattr(oc, k) for k in ("rule", "iters", "random_paths", "warmup", "lr")},
                       "finetune": {"iters": ft.iters, "lr": ft.lr, "warmup": ft.warmup,
                                    "from": "initialised" if args.scratch else "inherited"},
                       "train_seconds": round(seconds, 1), "estimate_seconds": round(estimate_seconds, 1), "estimates": est, "standalone": real,
                       "kendall_tau": float(tau.statistic), "p": float(tau.pvalue)}
    path.write_text(json.dumps(res, indent=1) + "\n")
    write_md(res)
    return 0


def write_md(res: dict) -> None:
    md = ["# One-shot training rules against stand-alone training (mobile space)", "",
          "12 random subnets (widths too), one-shot estimate (inherited weights, recalibrated; optionally fine-tuned "
          "first) against 600 stand-alone steps of the default recipe; Set5 PSNR, bicubic 28.42 dB. Stand-alone: "
          + ", ".join(f"{v:.2f}" for v in next(iter(res.values()))["standalone"]) + ".", "",
          "| rule | supernet steps | warm-up | lr | estimate: fine-tune steps, lr, from | seconds per estimate "
          "| estimates (dB) | Kendall tau (p) |", "|---|---|---|---|---|---|---|---|"]
    for label, r in res.items():
        c, f = r["config"], r.get("finetune", {"iters": 0})
        how = f"{f['iters']}, {f['lr']:g}, {f['from']}" if f["iters"] else "none (recalibrated only)"
        secs = f"{r['estimate_seconds']:.1f}" if "estimate_seconds" in r else "-"
        md.append(f"| {label} | {c['iters']} | {c['warmup']} | {c['lr']} | {how} | {secs} | "
                  f"{min(r['estimates']):.3f}-{max(r['estimates']):.3f} | {r['kendall_tau']:.2f} ({r['p']:.2f}) |")
    (OUT / "oneshot_rules.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
