"""``qnas-deploy demo``: the product end to end, in minutes, on two CPU cores.

search (``--quick``, on images bundled with scikit-image) -> short QAT training of the
found architecture -> ONNX and TFLite export -> parity and latency of both -> a one-page
report. Every step writes into one run folder; ``resume`` reuses the steps already done.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ._io import atomic_path, check_folder, write_json, write_text
from .errors import BadInput


def run_demo(out: str | Path, datasets_root: str | None = None, resume: bool = False, progress: bool = True,
             train_iters: int = 150, train_epochs: int = 4, search_config=None, latency_runs: int = 10,
             anchor: str = "bicubic", log: Callable[[str], None] = print) -> dict:
    """``anchor``: the Basic space's input anchor for the quick search (a few minutes of
    training start at bicubic with it, far below without; ``"none"`` is the paper's net)."""
    from .bench.latency import latency
    from .bench.parity import parity
    from .checkpoint import load_checkpoint
    from .evaluate import bicubic_upscaler
    from .exporters.export import export
    from .metrics import psnr, ssim
    from .search import SearchConfig, embedded_pairs, search
    from .spec import load
    from .train import TrainConfig, train

    out = Path(out)
    check_folder(out)
    if out.exists() and any(out.iterdir()) and not resume:
        raise BadInput(f"{out}: run folder is not empty (use --resume to continue it, or another -o)")
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    pairs = embedded_pairs(4)
    val_name, val = _validation_set(datasets_root, pairs)

    t = time.perf_counter()
    found = out / "found.json"
    if not (resume and found.is_file()):
        log("1/5 search (--quick, embedded images)")
        cfg = search_config or SearchConfig.quick(anchor=anchor)
        # Named for what it is rather than after its file, which every search calls found.json.
        search(cfg, pairs, found, resume=resume and (out / "found.search.pt").is_file(), progress=progress, log=log,
               name=f"demo_{cfg.space}")
    spec = load(found)
    times["search_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ck = out / "model.pt"
    if not (resume and ck.is_file() and load_checkpoint(ck).calibrated):
        log(f"2/5 train {spec.name} ({train_epochs} x {train_iters} iterations)")
        cfg = TrainConfig(epochs=train_epochs, iters=train_iters, batch=8, patch=24, lr=2e-3, optimizer="adam",
                          calib_batches=4)
        train(spec, pairs, ck, cfg, val_pairs=val, resume=resume and ck.is_file(), progress=progress, log=log)
    times["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    log("3/5 export ONNX and TFLite")
    files = []
    for fmt in ("onnx", "tflite"):
        path = out / f"model.{fmt}"
        if not (resume and path.is_file()):
            export(str(ck), str(path), fmt=fmt, log=lambda m: None)
        files.append(str(path))
    times["export_s"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"4/5 parity on {val_name}")
    par = parity(str(ck), files, {val_name: val}, diff_png=out / "parity_worst.png", progress=progress).to_dict()
    write_json(out / "parity.json", par)
    times["parity_s"] = time.perf_counter() - t

    t = time.perf_counter()
    log("5/5 latency (LR 128x128, 1 thread)")
    lat = latency(files, (128, 128), [1], runs=latency_runs, warmup=2, progress=progress).to_dict()
    write_json(out / "latency.json", lat)
    times["latency_s"] = time.perf_counter() - t

    bic = bicubic_upscaler(spec.scale)
    bicubic_db = float(np.mean([psnr(bic(p.lr), p.hr, spec.scale) for p in val]))
    bicubic_ssim = float(np.mean([ssim(bic(p.lr), p.hr, spec.scale) for p in val]))
    summary = {"found": str(found), "checkpoint": str(ck), "files": files, "validation": val_name,
               "bicubic_psnr_db": bicubic_db, "bicubic_ssim": bicubic_ssim, "parity": {k: {kk: v.get(kk) for kk in
                                                             ("max_abs_delta_psnr_db", "min_identical_pixels",
                                                              "passed")} | {"mean": v["mean"]}
                                                         for k, v in par["files"].items()},
               "latency": lat["rows"], "cost": spec.cost, "seconds": times}
    write_json(out / "summary.json", summary)
    _comparison_png(ck, val[0], out / "comparison.png")
    write_text(out / "REPORT.md", report(spec, summary))
    return summary


def _validation_set(datasets_root, pairs) -> tuple[str, list]:
    from .data import benchmark_pairs, default_datasets_root

    root = Path(datasets_root) if datasets_root else default_datasets_root()
    if root is not None and (root / "Set5").is_dir():
        return "Set5", benchmark_pairs(root / "Set5", 4)
    # No benchmark sets here: score on the bundled photographs (they are also the training
    # pool, so the numbers say little about quality; parity and latency stay meaningful).
    return "embedded", pairs[:3]


def _comparison_png(ck: Path, pair, out: Path) -> None:
    from PIL import Image

    from .imresize import imresize
    from .infer import torch_runner
    from .checkpoint import load_checkpoint

    sr = torch_runner(load_checkpoint(ck).model)(pair.lr)
    side = np.concatenate([imresize(pair.lr, 4.0), sr, pair.hr[: sr.shape[0], : sr.shape[1]]], axis=1)
    with atomic_path(out) as tmp:
        Image.fromarray(side).save(tmp, format="PNG")


def _compared(model: float, base: float, unit: str, digits: int) -> str:
    """``0.12 dB above`` / ``0.0005 below``: the size and the side of a difference."""
    d = model - base
    if round(abs(d), digits) == 0:
        return "equal to"
    return f"{abs(d):.{digits}f}{unit} {'above' if d > 0 else 'below'}"


def report(spec, s: dict) -> str:
    """REPORT.md: what was found, how it compares with bicubic, what the files hold, and
    the commands that come next; every sentence follows from the numbers it prints."""
    val = s["validation"]
    model = s["parity"]["pytorch"]["mean"][val]
    bic = {"psnr_db": s["bicubic_psnr_db"], "ssim": s["bicubic_ssim"]}
    run = Path(s["found"]).parent
    lines = [f"# qnas-deploy demo: {spec.name}", "",
             f"A `--quick` QuantNAS search found a {spec.space}-space network ({spec.channels} channels, "
             f"{spec.blocks} block(s), x{spec.scale}, BitOps at LR 32x32: {s['cost'].get('bitops_32x32', 0):.3g}), "
             f"trained for a few minutes on six bundled photographs."]
    if spec.anchor == "bicubic":
        lines += ["", "**The network is bicubic plus a learned residual**: its input, upscaled by a fixed 8-bit "
                  "bicubic convolution (MATLAB's `imresize`, border included), is added to what the searched "
                  "layers compute, so they learn only the difference to bicubic and the untrained network "
                  "starts at bicubic quality."]
    elif spec.anchor == "nearest":
        lines += ["", "The network adds its nearest-neighbour upscaled input to what the searched layers compute."]
    lines += ["", "| layer | operation | weight bits | activation bits |", "|---|---|---|---|"]
    lines += [f"| {l.name} | {l.op} | {l.w_bits} | {l.a_bits} |" for l in spec.layers]
    if spec.anchor == "bicubic":
        lines.append("| anchor (fixed, not searched) | bicubic 5x5, grouped by colour | 8 | 8 |")
    lines += ["", f"## Quality on {val}", "",
              "| | PSNR (dB) | SSIM |", "|---|---|---|",
              f"| bicubic | {bic['psnr_db']:.2f} | {bic['ssim']:.4f} |",
              f"| this model | {model['psnr_db']:.2f} | {model['ssim']:.4f} |", "",
              f"The model is {_compared(model['psnr_db'], bic['psnr_db'], ' dB', 2)} bicubic in PSNR and "
              f"{_compared(model['ssim'], bic['ssim'], '', 4)} bicubic in SSIM (Y channel, {spec.scale} border "
              "pixels shaved)."
              + (" On the bundled photographs, which are also its training images, these numbers say little."
                 if val == "embedded" else "")
              + " Minutes of training on six photographs show the pipeline; a model worth shipping needs "
              "hours (next steps below).", "",
              "![bicubic | model | ground truth](comparison.png)", "",
              "## Parity: the exported files against the trained model", "",
              "| file in its runtime | max abs dPSNR vs PyTorch (dB) | min identical pixels vs the reference "
              "in the runtime's arithmetic | pass |", "|---|---|---|---|"]
    for k, v in s["parity"].items():
        if k == "pytorch":
            continue
        lines.append(f"| {k} | {v['max_abs_delta_psnr_db']:.4f} | {100 * v['min_identical_pixels']:.3f}% | "
                     f"{'yes' if v['passed'] else 'no'} |")
    lines += ["", "`parity_worst.png` shows the file farthest from PyTorch and its difference to PyTorch (not to "
              "the reference): a runtime whose arithmetic rounds differently from PyTorch's differs from it in "
              "some pixels while equalling its own reference in all of them.",
              "", f"## Latency (LR 128x128, 1 thread, median of {s['latency'][0]['runs']})", "",
              "| file | backend | median (ms) | peak RSS (MB) |", "|---|---|---|---|"]
    lines += [f"| {Path(r['file']).name} | {r['backend']} | {r['median_ms']:.1f} | {r['peak_rss_mb']:.0f} |"
              for r in s["latency"]]
    lines += ["", "## Next steps", "", "```bash",
              "# train the found architecture for hours (BSD100 from ../shared/datasets, or any folder of images)",
              f"qnas-deploy train {run / 'found.json'} --data BSD100 --val Set5 --optimizer adam --lr 2e-3 "
              f"--epochs 30 --iters 1000 -o {run / 'long.pt'}",
              f"qnas-deploy eval {run / 'long.pt'} --data Set5,Set14",
              f"qnas-deploy export {run / 'long.pt'} --format tflite -o {run / 'long.tflite'}",
              f"qnas-deploy upscale {run / 'long.pt'} photo.png -o photo_x4.png --compare photo_side.png",
              "```", "",
              "Steps (s): " + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in s["seconds"].items()),
              "", "Files: found.json (+ found.alphas.png, the alphas per epoch), model.pt, model.onnx, model.tflite, "
              "parity.json, parity_worst.png, latency.json, summary.json.", ""]
    return "\n".join(lines)
