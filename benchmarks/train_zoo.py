"""Train the zoo's shipped weights (``qnas_deploy/zoo/weights/NAME.pt``).

    python benchmarks/train_zoo.py [NAME ...] [--work DIR] [--threads 1] [--datasets-root DIR]
    python benchmarks/train_zoo.py NAME ... --reship     # the shipped weights, snapped again

Each entry is an ordinary ``train`` run with the ``default`` recipe on BSD100 (seed 0,
batch 16, LR patch 32), on the narrow weight grid ([-127, 127], exact on every runtime
including ARM kernels without dot product), for the iterations in :data:`PLAN`. The run
checkpoints every epoch in ``--work``; run the script again after an interruption and it
continues where it stopped (finished entries are skipped). A finished run is scored on
Set5 and Set14 and copied into the package with a record of the command, recipe, seed,
data, machine and times that made it; ``results/zoo_weights.json`` and ``.md`` list them.
``--reship`` applies a newer calibration snap (``calibrate`` steps 3 to 5) to the shipped
weights themselves (no training run needed) and records it under ``made_by.reshipped``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
WEIGHTS = ROOT / "qnas_deploy" / "zoo" / "weights"
# entry: (epochs, iterations per epoch). Sized to this 2-core CPU: about 1 hour for the
# Basic entry, minutes for the LR-only nets, and about 2 hours for RFDN (1.6 s an iteration).
PLAN = {"espcn_w8a8": (16, 500), "mobile_w8a8": (20, 500), "basic_lrtail_bicubic": (14, 500),
        "rfdn_mixed": (20, 200)}
DATA, GRID, SEED = "BSD100", "narrow", 0
# Trained by the plan, not copied into the package: why (a shipped file must equal the trained
# model on every runtime the README names; tests/zoo/test_weights.py checks it).
HELD: dict[str, str] = {}


def machine() -> str:
    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    return f"{platform.machine()} {cpu}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def train_entry(name: str, work: Path, root: str | None, log=print) -> Path:
    """Train (or continue) ``name`` in ``work``; returns the finished checkpoint."""
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.data import cached_training_store, load_pairs
    from qnas_deploy.train import TrainConfig, train
    from qnas_deploy.zoo import load_zoo

    epochs, iters = PLAN[name]
    spec = dataclasses.replace(load_zoo(name), weight_grid=GRID)
    cfg = TrainConfig.from_recipe("default", epochs=epochs, iters=iters, seed=SEED)
    ck = work / f"{name}.pt"
    if ck.is_file() and load_checkpoint(ck).calibrated:
        return ck
    store = cached_training_store(DATA, spec.scale, root)
    val = load_pairs("Set5", spec.scale, root, training=False)
    train(spec, store, ck, cfg, val_pairs=val, resume=ck.is_file(), progress=False,
          log=lambda m: log(f"{name}: {m}"))
    return ck


def ship(name: str, ck_path: Path, root: str | None, command: str) -> dict:
    """Score the finished run and copy it into the package with the record of how it was made."""
    from qnas_deploy.calibrate import snap_add_scales, snap_batchnorms, snap_conv_scales
    from qnas_deploy.checkpoint import load_checkpoint, save_checkpoint
    from qnas_deploy.evaluate import evaluate_sets
    from qnas_deploy.infer import grey_aware, torch_runner

    ck = load_checkpoint(ck_path)
    # Runs calibrated before add scales (and ADQ BatchNorms) were snapped get them here (a
    # no-op on later runs).
    snapped = snap_add_scales(ck.model)
    bns = snap_batchnorms(ck.model)
    hist = ck.record.get("history", [])
    scores = evaluate_sets(grey_aware(torch_runner(ck.model.eval())), ["Set5", "Set14"], ck.spec.scale, root)
    made = {"command": command, "recipe": ck.record["config"]["recipe"], "seed": ck.record["config"]["seed"],
            "data": DATA, "weight_grid": GRID, "config": ck.record["config"],
            "train_seconds": round(sum(h["seconds"] for h in hist), 1),
            "finished": datetime.fromtimestamp(ck_path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "snapped_add_scales": [m.tensor for m in snapped],
            "snapped_batchnorm_channels": len(bns) + ck.record.get("made_by", {}).get("snapped_batchnorm_channels", 0),
            "scores": {s: {k: scores["sets"][s]["mean"][k] for k in ("psnr_db", "ssim")} for s in ("Set5", "Set14")}}
    record = {**ck.record, "made_by": made}
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    save_checkpoint(WEIGHTS / f"{name}.pt", ck.spec, ck.model, calibrated=True, record=record)
    return made


def reship(name: str, root: str | None, command: str) -> dict:
    """The shipped weights of ``name`` with the exactness snaps as they are now (a no-op where
    nothing moves), scored again; the training record is kept."""
    from qnas_deploy.calibrate import snap_add_scales, snap_batchnorms, snap_conv_scales
    from qnas_deploy.checkpoint import load_checkpoint, save_checkpoint
    from qnas_deploy.evaluate import evaluate_sets
    from qnas_deploy.infer import grey_aware, torch_runner

    path = WEIGHTS / f"{name}.pt"
    ck = load_checkpoint(path)
    snapped, bns, convs = snap_add_scales(ck.model), snap_batchnorms(ck.model), snap_conv_scales(ck.model)
    made = dict(ck.record["made_by"])
    if not snapped and not bns and not convs:
        return made
    scores = evaluate_sets(grey_aware(torch_runner(ck.model.eval())), ["Set5", "Set14"], ck.spec.scale, root)
    made["reshipped"] = made.get("reshipped", []) + [{
        "command": command, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "snapped": [[m.tensor, m.new_scale / m.old_scale] for m in snapped], "snapped_batchnorm_channels": len(bns),
        "snapped_conv_channels": len(convs), "largest_conv_step_move": max(
            (abs(m.new_scale / m.old_scale - 1) for m in convs), default=0.0),
        "scores_before": made["scores"]}]
    made["snapped_add_scales"] = made.get("snapped_add_scales", []) + [m.tensor for m in snapped]
    made["snapped_batchnorm_channels"] = made.get("snapped_batchnorm_channels", 0) + len(bns)
    made["snapped_conv_channels"] = made.get("snapped_conv_channels", 0) + len(convs)
    made["scores"] = {s: {k: scores["sets"][s]["mean"][k] for k in ("psnr_db", "ssim")} for s in ("Set5", "Set14")}
    save_checkpoint(path, ck.spec, ck.model, calibrated=True, record={**ck.record, "made_by": made})
    return made


def write_summary(rows: dict, root: str | None) -> None:
    from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets

    bic = evaluate_sets(bicubic_upscaler(4), ["Set5", "Set14"], 4, root)
    b = {s: bic["sets"][s]["mean"]["psnr_db"] for s in ("Set5", "Set14")}
    (OUT / "zoo_weights.json").write_text(json.dumps({"bicubic": b, "entries": rows}, indent=1) + "\n")
    md = ["# Shipped zoo weights", "", "Made by `python benchmarks/train_zoo.py` (recipe `default`, BSD100, seed 0, "
          "narrow weight grid); scored as trained (PyTorch) on Set5 and Set14 x4, Y channel, 4 pixels shaved.", "",
          "| entry | iterations | train time | Set5 PSNR / SSIM | vs bicubic | Set14 PSNR / SSIM | vs bicubic |",
          "|---|---|---|---|---|---|---|",
          f"| bicubic | - | - | {b['Set5']:.2f} | - | {b['Set14']:.2f} | - |"]
    for name, m in rows.items():
        s5, s14, c = m["scores"]["Set5"], m["scores"]["Set14"], m["config"]
        md.append(f"| {name} | {c['epochs'] * c['iters']} | {m['train_seconds'] / 60:.0f} min | "
                  f"{s5['psnr_db']:.2f} / {s5['ssim']:.4f} | {s5['psnr_db'] - b['Set5']:+.2f} | "
                  f"{s14['psnr_db']:.2f} / {s14['ssim']:.4f} | {s14['psnr_db'] - b['Set14']:+.2f} |")
    if rows:
        md += ["", f"Machine: {next(iter(rows.values()))['machine']}."]
    (OUT / "zoo_weights.md").write_text("\n".join(md) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", default=list(PLAN))
    ap.add_argument("--work", default=str(ROOT / "runs" / "zoo"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--datasets-root", default=None)
    ap.add_argument("--reship", action="store_true", help="snap the shipped weights again (no training)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/train_zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    path = OUT / "zoo_weights.json"
    rows = json.loads(path.read_text())["entries"] if path.is_file() else {}
    for name in args.names:
        if name not in PLAN:
            ap.error(f"{name}: not in the plan ({', '.join(PLAN)})")
        t0 = time.perf_counter()
        if args.reship:
            rows[name] = reship(name, args.datasets_root, command.strip())
            print(f"{name}: reshipped, {rows[name]['scores']}", file=sys.stderr, flush=True)
            write_summary(rows, args.datasets_root)
            continue
        ck = train_entry(name, work, args.datasets_root, log=lambda m: print(m, file=sys.stderr, flush=True))
        if name in HELD:
            print(f"{name}: trained ({ck}), not shipped: {HELD[name]}", file=sys.stderr, flush=True)
            continue
        rows[name] = ship(name, ck, args.datasets_root, command.strip())
        print(f"{name}: shipped, {time.perf_counter() - t0:.0f} s, {rows[name]['scores']}", file=sys.stderr, flush=True)
        write_summary(rows, args.datasets_root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
