"""PSNR at equal training budget: the mobile space against Basic and ESPCN, the Basic
tail at LR against the paper's HR tail, and the 7-bit weight grid against the full one.

    python benchmarks/equal_budget.py [--epochs 3] [--iters 100] [--datasets-root DIR] [--redo]

Every run is the same ordinary ``train`` run (BSD100, seed 0, batch 16, LR patch 32, Adam
2e-3, cosine, calibrated at the end): the budget is equal in iterations and patches seen;
wall time is recorded beside it (the architectures differ in cost per iteration). Scored as
trained (PyTorch fake-quant) on Set5 and Set14 x4 against bicubic. Each run's result is
kept in ``results/equal_budget.json`` as it finishes, and its checkpoint in ``--work``, so an
interrupted study continues (``--redo`` trains again).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
# (label, zoo entry, weight grid)
RUNS = (("mobile_w8a8", "mobile_w8a8", "full"), ("mobile_w8a8 (7-bit grid)", "mobile_w8a8", "7bit"),
        ("mobile_mixed", "mobile_mixed", "full"),
        ("espcn_w8a8", "espcn_w8a8", "full"), ("espcn_w8a8 (7-bit grid)", "espcn_w8a8", "7bit"),
        ("basic_mixed", "basic_mixed", "full"), ("basic_mixed_bicubic", "basic_mixed_bicubic", "full"),
        ("basic_lrtail_bicubic", "basic_lrtail_bicubic", "full"))


def run_one(entry: str, grid: str, cfg, root, work: Path) -> dict:
    import torch

    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.data import load_pairs
    from qnas_deploy.evaluate import evaluate_sets
    from qnas_deploy.infer import grey_aware, torch_runner
    from qnas_deploy.train import train
    from qnas_deploy.zoo import load_zoo

    torch.set_num_threads(2)
    spec = dataclasses.replace(load_zoo(entry), weight_grid=grid)
    ck_path = work / f"{entry}.{grid}.pt"
    t0 = time.perf_counter()
    if not (ck_path.is_file() and load_checkpoint(ck_path).calibrated):
        train(spec, load_pairs("BSD100", 4, root, training=True), ck_path, cfg, resume=ck_path.is_file(),
              progress=False, log=lambda m: None)
    wall = time.perf_counter() - t0
    ck = load_checkpoint(ck_path)
    scores = evaluate_sets(grey_aware(torch_runner(ck.model.eval())), ["Set5", "Set14"], 4, root)
    return {"entry": entry, "weight_grid": grid, "train_wall_s": wall,
            **{f"{s.lower()}_psnr_db": scores["sets"][s]["mean"]["psnr_db"] for s in ("Set5", "Set14")},
            **{f"{s.lower()}_ssim": scores["sets"][s]["mean"]["ssim"] for s in ("Set5", "Set14")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--datasets-root", default=None)
    ap.add_argument("--work", default="/tmp/equal_budget")
    ap.add_argument("--redo", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets
    from qnas_deploy.train import TrainConfig

    cfg = TrainConfig(epochs=args.epochs, iters=args.iters, batch=16, patch=32, optimizer="adam", lr=2e-3, seed=0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = OUT / "equal_budget.json"
    old = json.loads(path.read_text()) if path.is_file() and not args.redo else {}
    if old.get("config") != dataclasses.asdict(cfg):
        old = {}
    bic = evaluate_sets(bicubic_upscaler(4), ["Set5", "Set14"], 4, args.datasets_root)
    res = {"command": "python benchmarks/equal_budget.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "config": dataclasses.asdict(cfg),
           "bicubic": {s: bic["sets"][s]["mean"]["psnr_db"] for s in ("Set5", "Set14")}, "runs": old.get("runs", {})}
    for label, entry, grid in RUNS:
        if label not in res["runs"]:
            res["runs"][label] = run_one(entry, grid, cfg, args.datasets_root, work)
            print(label, res["runs"][label], file=sys.stderr, flush=True)
            path.write_text(json.dumps(res, indent=1) + "\n")
    b = res["bicubic"]
    md = ["# PSNR at equal training budget", "", f"Command: `{res['command']}`  ",
          f"Machine: {res['machine']}. Every run: BSD100, {cfg.epochs} epochs x {cfg.iters} iterations, batch "
          f"{cfg.batch}, LR patch {cfg.patch}, Adam {cfg.lr:g}, cosine, seed {cfg.seed}, calibrated at the end; "
          "scored as trained (PyTorch fake-quant). Short runs: these rank the choices at one budget, they are not "
          "the models' final quality.", "",
          f"Bicubic: Set5 {b['Set5']:.2f} dB, Set14 {b['Set14']:.2f} dB.", "",
          "| run | weight grid | Set5 (dB) | Set14 (dB) | Set14 vs bicubic | Set5 SSIM | train wall (s) |",
          "|---|---|---|---|---|---|---|"]
    for label, r in res["runs"].items():
        md.append(f"| {label} | {r['weight_grid']} | {r['set5_psnr_db']:.2f} | {r['set14_psnr_db']:.2f} | "
                  f"{r['set14_psnr_db'] - b['Set14']:+.2f} | {r['set5_ssim']:.4f} | {r['train_wall_s']:.0f} |")
    (OUT / "equal_budget.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
