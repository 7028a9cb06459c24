"""Mixed-precision training (``train --amp bf16``) against float32: speed, quality, parity.

    python benchmarks/amp_study.py [--iters 2000] [--rounds 5] [--work runs/amp_study] [--threads 1]

Three measurements on ``mobile_w8a8`` (narrow weight grid, as shipped), BSD100, seed 0,
batch 16, LR patch 32, recipe ``default``, one torch thread:

* throughput: the real training step (forward, L1 loss, backward, Adam) in float32 and
  under bfloat16 autocast, round robin (every round times ``--iters-timed`` steps of each
  after two untimed ones, so both share the machine's load); medians over ``--rounds``;
* quality: the same run trained ``--iters`` iterations in each precision, scored as
  trained on Set5 and Set14 x4;
* parity: the bfloat16-trained model exported to ONNX and TFLite and run in onnxruntime,
  LiteRT XNNPACK and builtin on Set5 + Set14: identical pixels against the reference in
  each runtime's arithmetic and |dPSNR| against PyTorch (evaluation and export are
  float32: the low precision lives only inside training steps).

This CPU has AVX-512 BF16 and AMX, which oneDNN uses for bfloat16 convolutions. Results:
``results/amp_study.{json,md}``; the trained runs are checkpointed in ``--work`` (an
interrupted study continues).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
ENTRY, DATA, SEED, EPOCH_ITERS = "mobile_w8a8", "BSD100", 0, 500
MODES = ("off", "bf16")


def throughput(store, rounds: int, iters: int) -> dict:
    import torch

    from qnas_deploy.data import PatchDataset, patch_loader
    from qnas_deploy.spaces import build_model
    from qnas_deploy.train import AMP
    from qnas_deploy.zoo import load_zoo

    model = build_model(dataclasses.replace(load_zoo(ENTRY), weight_grid="narrow")).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    ds = PatchDataset(store, 4, 32, SEED, 10 ** 9)
    rates = {m: [] for m in MODES}
    start = 0
    for _ in range(rounds):
        for mode in MODES:
            it = iter(patch_loader(ds, 16, start, 0))
            start += 16 * (iters + 2)
            for k in range(iters + 2):
                if k == 2:
                    t0 = time.perf_counter()
                lr, hr = next(it)
                with torch.autocast("cpu", dtype=AMP[mode], enabled=mode != "off"):
                    sr = model(lr)
                loss = (sr.float() - hr).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            rates[mode].append(16 * iters / (time.perf_counter() - t0))
    return {m: {"median_patches_per_s": statistics.median(r), "rounds": r} for m, r in rates.items()}


def trained(mode: str, iters: int, work: Path, store, root: str | None) -> Path:
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.data import load_pairs
    from qnas_deploy.train import TrainConfig, train
    from qnas_deploy.zoo import load_zoo

    spec = dataclasses.replace(load_zoo(ENTRY), weight_grid="narrow")
    cfg = TrainConfig.from_recipe("default", epochs=max(1, iters // EPOCH_ITERS), iters=min(iters, EPOCH_ITERS),
                                  seed=SEED, amp=mode)
    ck = work / f"{ENTRY}_{mode}.pt"
    if not (ck.is_file() and load_checkpoint(ck).calibrated):
        train(spec, store, ck, cfg, val_pairs=load_pairs("Set5", 4, root, training=False), resume=ck.is_file(),
              progress=False, log=lambda m: print(f"{mode}: {m}", file=sys.stderr, flush=True))
    return ck


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters-timed", type=int, default=10)
    ap.add_argument("--work", default=str(ROOT / "runs" / "amp_study"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--datasets-root", default=None)
    args = ap.parse_args(argv)
    import torch

    from qnas_deploy.bench.parity import parity
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.data import cached_training_store, load_pairs
    from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets
    from qnas_deploy.exporters.export import export
    from qnas_deploy.infer import grey_aware, torch_runner
    sys.path.insert(0, str(Path(__file__).parent))
    from train_zoo import machine

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = args.datasets_root
    store = cached_training_store(DATA, 4, root)
    res = {"command": "python benchmarks/amp_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "entry": ENTRY, "iters": args.iters, "torch": torch.__version__}
    res["throughput"] = throughput(store, args.rounds, args.iters_timed)
    print("throughput", {m: round(v["median_patches_per_s"], 1) for m, v in res["throughput"].items()},
          file=sys.stderr, flush=True)
    bic = evaluate_sets(bicubic_upscaler(4), ["Set5", "Set14"], 4, root)
    res["bicubic"] = {k: bic["sets"][k]["mean"]["psnr_db"] for k in ("Set5", "Set14")}
    res["runs"] = {}
    for mode in MODES:
        ck_path = trained(mode, args.iters, work, store, root)
        ck = load_checkpoint(ck_path)
        s = evaluate_sets(grey_aware(torch_runner(ck.model.eval())), ["Set5", "Set14"], 4, root)
        res["runs"][mode] = {"train_seconds": round(sum(h["seconds"] for h in ck.record["history"]), 1),
                             **{f"{k.lower()}_psnr_db": s["sets"][k]["mean"]["psnr_db"] for k in ("Set5", "Set14")}}
    ck_path = work / f"{ENTRY}_bf16.pt"
    files = [str(export(str(ck_path), work / f"{ENTRY}_bf16.{fmt}", fmt, log=lambda m: None).path)
             for fmt in ("onnx", "tflite")]
    sets = {k: load_pairs(k, 4, root, training=False) for k in ("Set5", "Set14")}
    pr = parity(str(ck_path), files, sets, threads=1, progress=False)
    res["parity"] = {label: {"identical_pixels_min": min(i["identical_pixels"] for i in e.images.values()),
                             "max_abs_diff": max(i["max_abs_diff"] for i in e.images.values()),
                             "max_abs_dpsnr_db": max(abs(i["delta_psnr_db"]) for i in e.images.values())}
                     for label, e in pr.files.items() if label not in ("pytorch",)}
    (OUT / "amp_study.json").write_text(json.dumps(res, indent=1) + "\n")
    write_md(res)
    return 0


def write_md(res: dict) -> None:
    t, b = res["throughput"], res["bicubic"]
    base = t["off"]["median_patches_per_s"]
    md = ["# Mixed-precision training (bfloat16) against float32", "", f"Command: `{res['command'].strip()}`  ",
          f"Machine: {res['machine']} (AVX-512 BF16, AMX).", "",
          f"{res['entry']} (narrow weight grid), BSD100, seed 0, batch 16, LR patch 32, recipe default; "
          "convolutions under bfloat16 autocast, every quantizer in float32.", "",
          "| precision | training step (patches/s, median) | vs float32 | "
          f"Set5 PSNR ({res['iters']} it.) | Set14 PSNR | train time |", "|---|---|---|---|---|---|",
          f"| bicubic | - | - | {b['Set5']:.2f} | {b['Set14']:.2f} | - |"]
    for mode, r in res["runs"].items():
        p = t[mode]["median_patches_per_s"]
        md.append(f"| {'float32' if mode == 'off' else mode} | {p:.0f} | {p / base:.2f}x | {r['set5_psnr_db']:.2f} | "
                  f"{r['set14_psnr_db']:.2f} | {r['train_seconds'] / 60:.1f} min |")
    md += ["", "Parity of the bfloat16-trained model's exported files (Set5 + Set14; least share of identical pixels "
           "against the reference in the runtime's arithmetic, largest difference, largest |PSNR - PyTorch's|):", "",
           "| file / runtime | identical pixels | max diff | max abs dPSNR |", "|---|---|---|---|"]
    for label, p in res["parity"].items():
        md.append(f"| {label} | {100 * p['identical_pixels_min']:.3f}% | {p['max_abs_diff']} | "
                  f"{p['max_abs_dpsnr_db']:.4f} dB |")
    (OUT / "amp_study.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
