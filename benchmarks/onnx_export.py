"""ONNX export: integer-ness, parity and speed. Writes benchmarks/results/onnx_export.{json,md}.

    python benchmarks/onnx_export.py [--checkpoint model.pt] [--runs 20]

* float convs left after onnxruntime's ORT_ENABLE_ALL optimisation, per zoo entry;
* export time per zoo entry;
* with --checkpoint: Set5/Set14 parity, PyTorch fake-quant vs numpy reference vs
  onnxruntime (delta PSNR per image, identical uint8 pixels), and ADQ static vs dynamic;
* speed: int8 ONNX vs FP32 ONNX of the same network vs onnxruntime quantize_static of
  that FP32 model (QDQ, per channel), 1 and 2 threads, LR 128x128 and 320x180, median.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from qnas_deploy.evaluate import evaluate_sets
from qnas_deploy.exporters import reference
from qnas_deploy.exporters.export import export
from qnas_deploy.exporters.onnx_runner import open_onnx, session
from qnas_deploy.infer import grey_aware, torch_runner
from qnas_deploy.zoo import names

OUT = Path(__file__).parent / "results"


def float_convs(path: str, tmp: Path) -> int:
    opt = tmp / "opt.onnx"
    session(path, threads=1, optimized_path=str(opt))
    ops = [n.op_type for n in onnx.load(str(opt)).graph.node]
    return ops.count("Conv") + ops.count("FusedConv")


def median_ms(path: str, size: tuple[int, int], threads: int, runs: int, dtype=np.uint8) -> float:
    s = session(path, threads=threads)
    x = np.random.default_rng(0).integers(0, 255, (1, 3, *size)).astype(dtype)
    if dtype == np.float32:
        x /= 255
    return timed_median_ms(lambda: s.run(None, {"input": x}), runs)


def timed_median_ms(call, runs: int, warmup: int = 3) -> float:
    """Median wall time of ``call()`` in ms, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def quantize_static_model(fp32_path: str, out: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"input": rng.random((1, 3, 64, 64), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(fp32_path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="trained checkpoint for the parity measurement")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    res: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                 "python": sys.version.split()[0], "zoo": {}}
    import onnxruntime

    res["onnxruntime"] = onnxruntime.__version__
    for name in names():
        e = export(name, tmp / f"{name}.onnx", log=lambda m: None)
        res["zoo"][name] = {"export_s": round(e.seconds, 2), "float_convs_after_ort": float_convs(e.path, tmp),
                            "convs": len(e.graph.conv_nodes())}
        print(name, res["zoo"][name], flush=True)

    # Speed: the Basic net (36 channels) in int8 (w8a8), FP32 and quantize_static of the FP32 file.
    fp32 = str(tmp / "basic_fp32.onnx")
    fp32_float_io = str(tmp / "basic_fp32_fio.onnx")
    export("basic_fp32", fp32_float_io, io="float", log=lambda m: None)
    qs = str(tmp / "basic_fp32_qs.onnx")
    quantize_static_model(fp32_float_io, qs)
    speed = []
    for size in ((128, 128), (180, 320)):
        for threads in (1, 2):
            row = {"size": f"{size[1]}x{size[0]}", "threads": threads,
                   "fp32_ms": median_ms(fp32, size, threads, args.runs),
                   "quantize_static_ms": median_ms(qs, size, threads, args.runs, np.float32)}
            for name in ("basic_w8a8", "basic_mixed", "basic_w4a4"):
                row[f"{name}_ms"] = median_ms(str(tmp / f"{name}.onnx"), size, threads, args.runs)
            row["w8a8_speedup_vs_fp32"] = row["fp32_ms"] / row["basic_w8a8_ms"]
            row["w8a8_vs_quantize_static"] = row["quantize_static_ms"] / row["basic_w8a8_ms"]
            speed.append(row)
            print(row, flush=True)
    res["speed"] = speed

    if args.checkpoint:
        par = {}
        e = export(args.checkpoint, tmp / "ck.onnx", log=lambda m: None)
        ed = export(args.checkpoint, tmp / "ck_dyn.onnx", adq="dynamic", log=lambda m: None)
        runners = {"torch": grey_aware(torch_runner(e.model)),
                   "reference": grey_aware(reference.runner(e.graph)),
                   "reference_ort": grey_aware(reference.runner(e.graph, "ort")),
                   "onnxruntime": grey_aware(open_onnx(e.path, threads=2).run),
                   "onnxruntime_adq_dynamic": grey_aware(open_onnx(ed.path, threads=2).run)}
        outs = {}
        for k, run in runners.items():
            store = {}

            def keep(lr, run=run, store=store):
                y = run(lr)
                store[len(store)] = y
                return y
            par[k] = evaluate_sets(keep, ["Set5", "Set14"], 4)
            outs[k] = store
        base = par["torch"]
        summary = {}
        for k in runners:
            deltas = [par[k]["sets"][s]["images"][i]["psnr_db"] - base["sets"][s]["images"][i]["psnr_db"]
                      for s in base["sets"] for i in base["sets"][s]["images"]]
            ident = [float(np.mean(outs[k][j] == outs["reference_ort" if k.startswith("onnxruntime") else "torch"][j]))
                     for j in outs[k]]
            summary[k] = {"max_abs_delta_psnr_db": max(abs(d) for d in deltas),
                          "min_identical_pixels": min(ident),
                          "mean_psnr_db": {s: par[k]["sets"][s]["mean"]["psnr_db"] for s in base["sets"]}}
            print(k, summary[k], flush=True)
        res["parity"] = {"checkpoint": args.checkpoint, "summary": summary}

    OUT.mkdir(exist_ok=True)
    (OUT / "onnx_export.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# ONNX export", "", f"Command: `python benchmarks/onnx_export.py {' '.join(sys.argv[1:])}`  ",
          f"Machine: {res['machine']}, onnxruntime {res['onnxruntime']}. Medians of {args.runs} runs after 3 warm-up runs.", "",
          "| zoo entry | convs | float convs after ORT_ENABLE_ALL | export (s) |", "|---|---|---|---|"]
    md += [f"| {n} | {v['convs']} | {v['float_convs_after_ort']} | {v['export_s']} |" for n, v in res["zoo"].items()]
    md += ["", "| LR size | threads | FP32 (ms) | quantize_static (ms) | w8a8 (ms) | mixed (ms) | w4a4 (ms) | w8a8 vs FP32 | w8a8 vs quantize_static |",
           "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['size']} | {r['threads']} | {r['fp32_ms']:.1f} | {r['quantize_static_ms']:.1f} | {r['basic_w8a8_ms']:.1f} | "
           f"{r['basic_mixed_ms']:.1f} | {r['basic_w4a4_ms']:.1f} | {r['w8a8_speedup_vs_fp32']:.2f}x | {r['w8a8_vs_quantize_static']:.2f}x |"
           for r in speed]
    if "parity" in res:
        md += ["", f"Parity on Set5+Set14, checkpoint `{res['parity']['checkpoint']}` (delta PSNR vs PyTorch fake-quant; "
               "identical pixels vs PyTorch, or vs the reference in onnxruntime arithmetic for onnxruntime):", "",
               "| backend | max abs dPSNR (dB) | min identical pixels | Set5 (dB) | Set14 (dB) |", "|---|---|---|---|---|"]
        md += [f"| {k} | {v['max_abs_delta_psnr_db']:.4f} | {v['min_identical_pixels'] * 100:.3f}% | "
               f"{v['mean_psnr_db']['Set5']:.3f} | {v['mean_psnr_db']['Set14']:.3f} |" for k, v in res["parity"]["summary"].items()]
    (OUT / "onnx_export.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
