"""Figures of the shipped zoo weights: the PSNR-cost fronts and a side-by-side crop.

    python benchmarks/zoo_figures.py [--datasets-root DIR]

Reads ``results/zoo_weights.json`` (the shipped models' Set5/Set14 PSNR, made by
``train_zoo.py``) and ``results/int8_speed.json`` (ms per HD frame, 1 thread, int8 file on
onnxruntime and LiteRT+XNNPACK; latency does not depend on the weights' values) and
computes BitOps from each found.json. Writes ``results/zoo_pareto.png`` (Set14 PSNR against
BitOps and against latency, bicubic as the floor), ``results/zoo_crop.png`` (a Set14 crop:
bicubic | each shipped model | HR) and ``results/zoo_quality.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results"
CROP = ("Set5", 2, (48, 48, 160, 160))  # set, image index, (y, x, h, w) in HR pixels


def gather() -> tuple[dict, dict]:
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.cost import summary
    from qnas_deploy.zoo import shipped_weights

    zoo = json.loads((OUT / "zoo_weights.json").read_text())
    speed = {e["name"]: e for e in json.loads((OUT / "int8_speed.json").read_text())["entries"]}
    rows = {}
    for name, m in zoo["entries"].items():
        spec = load_checkpoint(shipped_weights(name)).spec
        hd = next((r for r in speed.get(name, {}).get("rows", []) if r["size"] == "180x320" and r["threads"] == 1), None)
        rows[name] = {"set5": m["scores"]["Set5"]["psnr_db"], "set14": m["scores"]["Set14"]["psnr_db"],
                      "gbitops": summary(spec)["bitops_32x32"] / 1e9,
                      "xnn_ms": hd["median_ms"]["xnn_int8"] if hd else None,
                      "ort_ms": hd["median_ms"]["ort_int8"] if hd else None}
    return zoo["bicubic"], rows


def pareto_png(bic: dict, rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((axes[0], "gbitops", "GBitOps (32x32 LR input)"),
              (axes[1], "xnn_ms", "ms per HD frame, LiteRT+XNNPACK int8, 1 thread"))
    for ax, key, label in panels:
        for name, r in rows.items():
            if r[key] is None:
                continue
            ax.scatter(r[key], r["set14"], s=40)
            ax.annotate(name, (r[key], r["set14"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(bic["Set14"], color="grey", ls="--", lw=1, label=f"bicubic {bic['Set14']:.2f} dB")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("Set14 x4 PSNR (dB)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Shipped zoo weights: quality against cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def crop_png(rows: dict, root: str | None, path: Path) -> str:
    from PIL import Image, ImageDraw

    from qnas_deploy.data import benchmark_pairs, resolve_dataset
    from qnas_deploy.imresize import imresize
    from qnas_deploy.infer import grey_aware, torch_runner
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.zoo import shipped_weights

    set_name, idx, (y, x, h, w) = CROP
    pair = benchmark_pairs(resolve_dataset(set_name, root), 4)[idx]
    panels = [("bicubic", np.clip(imresize(pair.lr, 4.0), 0, 255).round().astype(np.uint8))]
    for name in rows:
        run = grey_aware(torch_runner(load_checkpoint(shipped_weights(name)).model.eval()))
        panels.append((name, run(pair.lr)))
    panels.append(("HR", pair.hr))
    tiles = []
    for label, img in panels:
        t = Image.fromarray(np.ascontiguousarray(img[y:y + h, x:x + w])).resize((2 * w, 2 * h), Image.NEAREST)
        canvas = Image.new("RGB", (2 * w, 2 * h + 18), "white")
        canvas.paste(t, (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), label, fill="black")
        tiles.append(canvas)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), tiles[0].height), "white")
    cx = 0
    for t in tiles:
        sheet.paste(t, (cx, 0))
        cx += t.width + 4
    sheet.save(path)
    return f"{set_name} {pair.name}, HR rows {y}-{y + h}, columns {x}-{x + w}, shown 2x (nearest)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets-root", default=None)
    args = ap.parse_args(argv)
    bic, rows = gather()
    pareto_png(bic, rows, OUT / "zoo_pareto.png")
    where = crop_png(rows, args.datasets_root, OUT / "zoo_crop.png")
    md = ["# Shipped zoo weights: quality against cost", "",
          "Command: `python benchmarks/zoo_figures.py` (after `python benchmarks/train_zoo.py`).", "",
          "| entry | Set5 PSNR | Set14 PSNR | Set14 vs bicubic | GBitOps (32x32) | ms / HD frame XNNPACK | ms / HD frame ORT |",
          "|---|---|---|---|---|---|---|",
          f"| bicubic | {bic['Set5']:.2f} | {bic['Set14']:.2f} | - | - | - | - |"]
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    for name, r in rows.items():
        md.append(f"| {name} | {r['set5']:.2f} | {r['set14']:.2f} | {r['set14'] - bic['Set14']:+.2f} | "
                  f"{r['gbitops']:.3f} | {f(r['xnn_ms'])} | {f(r['ort_ms'])} |")
    md += ["", "Latency from `results/int8_speed.json` (int8 files, 180x320 LR in, 1 thread).", "",
           "![PSNR against BitOps and latency](zoo_pareto.png)", "",
           f"![bicubic, the shipped models, HR]({'zoo_crop.png'})", "", f"Crop: {where}."]
    (OUT / "zoo_quality.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
