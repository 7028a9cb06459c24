"""The bicubic anchor's border: imresize's mirrored border against the zero padding it had.

Quality: MATLAB bicubic, the float anchor with zero padding (as it was) and with the
symmetric mirror (as it is), on Set5 and Set14: PSNR/SSIM as papers report them and the
PSNR / largest error of the border strip they shave. Cost: basic_mixed_bicubic exported
both ways (the zero-padded graph is the mirrored one with its pad node folded back into
the conv's zero padding), timed round robin in onnxruntime and LiteRT + XNNPACK.

    python benchmarks/anchor_border.py [--datasets-root ../shared/datasets] [--runs 30]

Writes benchmarks/results/anchor_border.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from qnas_deploy.anchor import Anchor
from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets
from qnas_deploy.exporters import ir
from qnas_deploy.exporters.export import ExportOptions, canonical, compile_graph, prepare
from qnas_deploy.infer import grey_aware
from qnas_deploy.runtimes import RUNTIMES
from qnas_deploy.runtimes.timing import Job, round_robin

OUT = Path(__file__).parent / "results"
SETS = ["Set5", "Set14"]


def anchor_upscaler(mirror: bool):
    a = Anchor("bicubic", 4, tensor_bits=32).eval()

    def run(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255)
        with torch.no_grad():
            y = a(x, 1 / 255) if mirror else a.shuffle(torch.nn.functional.conv2d(x, a.conv.weight, padding=2, groups=3))
        return np.clip(np.round(y[0].numpy().transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
    return grey_aware(run)


def zero_padded(graph: ir.Graph) -> ir.Graph:
    """The graph with the anchor's mirror folded back into its conv's zero padding."""
    pad = next(n for n in graph.nodes if n.op == "pad")
    nodes = []
    for n in graph.nodes:
        if n is pad:
            continue
        if pad.output in n.inputs:
            n = ir.Node(n.op, [pad.inputs[0]], n.output, n.attrs.replace(pad=pad.attrs.pads), n.name)
        nodes.append(n)
    return graph.with_nodes(nodes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets-root")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--size", default="180x320", help="LR HxW to time at")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    quality = {}
    for label, run in (("imresize", bicubic_upscaler(4)), ("anchor, zero padding (before)", anchor_upscaler(False)),
                       ("anchor, symmetric mirror (now)", anchor_upscaler(True))):
        r = evaluate_sets(run, SETS, 4, args.datasets_root)
        quality[label] = {s: r["sets"][s]["mean"] for s in SETS}
        print(label, quality[label], flush=True)
    p = prepare("basic_mixed_bicubic", log=lambda _: None)
    graph = canonical(p.model, ExportOptions())
    jobs, names = [], []
    with tempfile.TemporaryDirectory() as d:
        for variant, g in (("mirror", graph), ("zero", zero_padded(graph))):
            for fmt, rt in (("onnx", "onnxruntime"), ("tflite", "litert-xnnpack")):
                path = Path(d) / f"{variant}.{fmt}"
                path.write_bytes(compile_graph(g, ExportOptions(format=fmt, input_size=size))[1])
                jobs.append(Job(str(path), rt, RUNTIMES[rt].input_shape(*size)))
                names.append((variant, rt))
        timings = round_robin(jobs, 1, args.runs, 3).timings
    ms = {f"{v} {rt}": t.median_ms for (v, rt), t in zip(names, timings)}
    cost = {rt: ms[f"mirror {rt}"] / ms[f"zero {rt}"] for rt in ("onnxruntime", "litert-xnnpack")}
    res = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs", "lr_size": args.size,
           "runs": args.runs, "threads": 1, "quality": quality, "median_ms": ms, "mirror_over_zero": cost}
    OUT.mkdir(exist_ok=True)
    (OUT / "anchor_border.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# The bicubic anchor's border", "", f"Command: `python benchmarks/anchor_border.py --runs {args.runs}`; "
          f"{res['machine']}.", "",
          "| upscaler | Set5 PSNR | Set5 SSIM | Set5 border PSNR | Set5 border max err | Set14 PSNR | Set14 SSIM | "
          "Set14 border PSNR | Set14 border max err |", "|---|---|---|---|---|---|---|---|---|"]
    for label, q in quality.items():
        md.append(f"| {label} | " + " | ".join(f"{q[s]['psnr_db']:.4f} | {q[s]['ssim']:.4f} | "
                                                f"{q[s]['border_psnr_db']:.2f} | {q[s]['border_max_error']}"
                                                for s in SETS) + " |")
    md += ["", f"Latency of basic_mixed_bicubic (initialised weights) at LR {args.size}, 1 thread, median of "
           f"{args.runs} round-robin rounds:", "", "| runtime | zero padding (ms) | mirror (ms) | mirror / zero |",
           "|---|---|---|---|"]
    md += [f"| {rt} | {ms[f'zero {rt}']:.1f} | {ms[f'mirror {rt}']:.1f} | {cost[rt]:.3f} |" for rt in cost]
    (OUT / "anchor_border.md").write_text("\n".join(md) + "\n")
    print(json.dumps(res["median_ms"]), cost)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
