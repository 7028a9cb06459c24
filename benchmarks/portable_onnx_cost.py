"""What the portable ONNX graph costs in onnxruntime: the default file (quantized adds as
float ``Sum``, not fused into QLinearAdd, which rounds per CPU) and the openvino target's
file (also an identity 1x1 max pool between each conv and its add,
``passes/conv_add_copy.py``), against the default file with ``Sum`` -> ``Add`` (what the
exporter wrote before). Timed round robin in one process, 1 thread.

    python benchmarks/portable_onnx_cost.py [--size 128x128] [--runs 30]

Writes ``benchmarks/results/portable_onnx_cost.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def undo(src: Path, dst: Path) -> None:
    """``src`` with every ``Sum`` an ``Add`` (and any identity 1x1 MaxPool bypassed)."""
    import onnx

    m = onnx.load(str(src))
    rename = {}
    keep = []
    for n in m.graph.node:
        if n.op_type == "MaxPool" and any(a.name == "kernel_shape" and list(a.ints) == [1, 1] for a in n.attribute):
            rename[n.output[0]] = n.input[0]
            continue
        if n.op_type == "Sum":
            n.op_type = "Add"
        keep.append(n)
    for n in keep:
        n.input[:] = [rename.get(i, i) for i in n.input]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.save(m, str(dst))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", default="basic_mixed,basic_w8a8,espcn_w8a8,basic_mixed_bicubic,rfdn_mixed")
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args(argv)

    import numpy as np

    from qnas_deploy.exporters.export import export
    from qnas_deploy.runtimes import RUNTIMES
    from qnas_deploy.runtimes.timing import round_robin_calls

    h, w = (int(v) for v in a.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        calls, outs = {}, {}
        for name in a.entries.split(","):
            new, old, ov = Path(d) / f"{name}.onnx", Path(d) / f"{name}.fused.onnx", Path(d) / f"{name}.ov.onnx"
            export(name, str(new), log=lambda m: None)
            export(name, str(ov), target="openvino", log=lambda m: None)
            undo(new, old)
            for kind, p in (("portable", new), ("openvino", ov), ("fused", old)):
                calls[(name, kind)] = RUNTIMES["onnxruntime"].timed_call(p, (1, 3, h, w), 1, np.random.default_rng(0))
                x = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
                outs[(name, kind)] = RUNTIMES["onnxruntime"].image_runner(p, 1)(x)
        t = round_robin_calls(calls, a.runs, warmup=3, progress="portable onnx")
        for name in a.entries.split(","):
            p, o, f = (t[(name, k)].median_ms for k in ("portable", "openvino", "fused"))
            rows.append({"entry": name, "portable_ms": p, "openvino_file_ms": o, "fused_ms": f, "ratio": p / f,
                         "openvino_file_ratio": o / f,
                         "identical_to_fused": float(np.mean(outs[(name, "portable")] == outs[(name, "fused")])),
                         "openvino_file_identical": float(np.mean(outs[(name, "portable")]
                                                                  == outs[(name, "openvino")]))})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "portable_onnx_cost.json").write_text(json.dumps({"size": a.size, "runs": a.runs, "rows": rows},
                                                                indent=1))
    lines = [f"onnxruntime, 1 thread, LR {a.size}, median of {a.runs} round-robin runs on this x86 machine "
             "(initialised weights; `python benchmarks/portable_onnx_cost.py`).", "",
             "| entry | default file (Sum) ms | openvino file (Sum + copies) ms | Add -> QLinearAdd ms | "
             "default / QLinearAdd | openvino file / QLinearAdd | QLinearAdd pixels = default's | "
             "openvino file pixels = default's |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['entry']} | {r['portable_ms']:.2f} | {r['openvino_file_ms']:.2f} | {r['fused_ms']:.2f} | "
              f"{r['ratio']:.3f} | {r['openvino_file_ratio']:.3f} | {100 * r['identical_to_fused']:.2f}% | "
              f"{100 * r['openvino_file_identical']:.2f}% |" for r in rows]
    md = "\n".join(lines) + "\n"
    (RESULTS / "portable_onnx_cost.md").write_text("# What the portable ONNX graph costs\n\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
