"""Where LiteRT builtin's distance to PyTorch comes from: the builtin arithmetic with one class
of convs computed exactly instead, against the PyTorch model, per shipped model.

    python benchmarks/builtin_rounding.py [--entries basic_lrtail_bicubic] [--sets Set5,Set14]

For each arithmetic (``litert-builtin``: x86, ``litert-builtin-aarch64``) and each choice of
convs computed in the exact arithmetic (``none``; ``pointwise``: the depthwise 1x1 convs, i.e.
requantisations and ADQ BatchNorms, which the builtin depthwise kernel requantises in two
roundings on both machines, and those ``pointwise_exact`` wrote dense; ``full``: every other conv; ``all``), the largest and mean
|PSNR - PyTorch's| over the images of the shipped model's LiteRT file as lowered (numpy
reference; no runtime). ``none`` is what the runtimes compute (the exact matrix checks that
they do). Results: ``results/builtin_rounding.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
ARITHMETICS = ("litert-builtin", "litert-builtin-aarch64")
CHOICES = ("none", "pointwise", "full", "all")
# With every conv exact, each other kind of op the builtin arithmetic computes its own way
# (arithmetic/litert.py BUILTIN) exact too, one at a time and together.
OTHERS = ("add", "mul", "sigmoid")
EXTRA = tuple(f"all+{o}" for o in OTHERS)


def with_exact(kernels: dict, choice: str) -> dict:
    """``kernels`` with the convs (and other ops) of ``choice`` computed in the exact arithmetic."""
    from qnas_deploy.exporters.arithmetic import exact

    if "+" in choice:
        choice, op = choice.split("+")
        kernels = {**kernels, op: exact.KERNELS[op]}
    base = kernels["conv"]

    from qnas_deploy.exporters.passes.pointwise_exact import diagonal

    def conv(graph, node, values):
        a = node.attrs
        # a depthwise 1x1 conv, or one pointwise_exact wrote dense (diagonal weights)
        pw = tuple(a.kernel) == (1, 1) and (a.depthwise(graph.tensor(node.inputs[0]).channels) or
                                            diagonal(graph, node))
        if choice == "all" or (choice == "pointwise" and pw) or (choice == "full" and not pw):
            return exact.KERNELS["conv"](graph, node, values)
        return base(graph, node, values)
    return {**kernels, "conv": conv}


def measure(entry: str, sets: list[str], arithmetics=ARITHMETICS, choices=CHOICES + EXTRA) -> dict:
    import numpy as np

    from qnas_deploy import zoo
    from qnas_deploy.data import benchmark_pairs, resolve_dataset
    from qnas_deploy.exporters import reference
    from qnas_deploy.exporters.export import lower, prepare
    from qnas_deploy.exporters.options import ExportOptions
    from qnas_deploy.metrics import psnr

    p = prepare(str(zoo.shipped_weights(entry)), log=lambda m: None)
    g = lower(p.model, ExportOptions(format="tflite", target="litert-builtin"))
    pairs = [q for s in sets for q in benchmark_pairs(resolve_dataset(s), 4) if q.lr.ndim == 3]

    def run(arith):
        one = reference.runner(g, arith)
        return [one(q.lr) for q in pairs]
    truth = [psnr(y, q.hr, 4) for y, q in zip(run("pytorch"), pairs)]
    out = {}
    for ar in arithmetics:
        for choice in choices:
            trial = with_exact(reference.ARITHMETIC[ar], choice)
            d = [abs(psnr(y, q.hr, 4) - t) for y, q, t in zip(run(trial), pairs, truth)]
            out[f"{ar}|{choice}"] = {"max_abs_dpsnr_db": float(max(d)), "mean_abs_dpsnr_db": float(np.mean(d))}
            print(entry, ar, choice, round(max(d), 4), file=sys.stderr, flush=True)
    return {"images": len(pairs), "cells": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", default="basic_lrtail_bicubic")
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--arithmetics", default=",".join(ARITHMETICS))
    ap.add_argument("--choices", default=",".join(CHOICES + EXTRA), help="the cells to (re)compute; the "
                    "others are kept from the last results")
    args = ap.parse_args(argv)
    path = OUT / "builtin_rounding.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    cmd = "python benchmarks/builtin_rounding.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for e in args.entries.split(",") if args.choices else []:  # --choices "": tabulate only
        new = measure(e, args.sets.split(","), args.arithmetics.split(","), args.choices.split(","))
        old = res.get(e, {}) if res.get(e, {}).get("sets") == args.sets else {}
        cmds = [c for c in old.get("command", "").split("; ") if c] + [cmd.strip()]
        res[e] = {"command": "; ".join(dict.fromkeys(cmds)), "sets": args.sets, "images": new["images"],
                  "cells": {**old.get("cells", {}), **new["cells"]}}
    path.write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# LiteRT builtin against PyTorch: which ops' rounding", "",
             "Largest (mean) |PSNR - PyTorch's| over the images, the builtin arithmetic with the named convs "
             "computed exactly instead (numpy reference of the shipped model's LiteRT file; `none` is what the "
             "runtime computes). pointwise: depthwise 1x1 convs (requantisations, ADQ BatchNorms).", "",
             "| entry | images | arithmetic | " + " | ".join(f"exact: {c}" for c in CHOICES) + " |",
             "|---|---|---|" + "---|" * len(CHOICES)]
    def cell(c) -> str:
        return "-" if c is None else f"{c['max_abs_dpsnr_db']:.4f} ({c['mean_abs_dpsnr_db']:.4f})"

    for e, r in res.items():
        for ar in ARITHMETICS:
            cells = [r["cells"].get(f"{ar}|{c}") for c in CHOICES]
            if None not in cells:
                lines.append(f"| {e} | {r['images']} ({r['sets']}) | {ar} | " + " | ".join(map(cell, cells)) + " |")
    lines += ["", "The rest, with every conv exact: each other op the builtin kernels compute their own way "
              "(ADD's two-step rescaling, MUL's fixed-point multiplier, LOGISTIC's table) exact as well.", "",
              "| entry | arithmetic | " + " | ".join(f"exact: {c}" for c in EXTRA) + " |",
              "|---|---|" + "---|" * len(EXTRA)]
    for e, r in res.items():
        for ar in ARITHMETICS:
            cells = [r["cells"].get(f"{ar}|{c}") for c in EXTRA]
            if any(cells):
                lines.append(f"| {e} | {ar} | " + " | ".join(map(cell, cells)) + " |")
    lines += ["", "Commands: " + "; ".join(dict.fromkeys(f"`{c}`" for r in res.values() for c in r["command"].split("; ")))]
    (OUT / "builtin_rounding.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
