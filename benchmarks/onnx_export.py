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
from pathlib import Path

import numpy as np
import onnx

from qnas_deploy.evaluate import delta_psnr_db, evaluate_sets
from qnas_deploy.exporters import reference
from qnas_deploy.exporters.export import export
from qnas_deploy.runtimes.onnxruntime import open_onnx, session
from qnas_deploy.runtimes.timing import round_robin_calls
from qnas_deploy.infer import grey_aware, torch_runner
from qnas_deploy.zoo import names

OUT = Path(__file__).parent / "results"


def float_convs(path: str, tmp: Path) -> int:
    opt = tmp / "opt.onnx"
    session(path, threads=1, optimized_path=str(opt))
    ops = [n.op_type for n in onnx.load(str(opt)).graph.node]
    return ops.count("Conv") + ops.count("FusedConv")


def _input(size: tuple[int, int], dtype=np.uint8) -> np.ndarray:
    """A random LR image, uint8 (or float [0, 1] for the float-I/O models)."""
    x = np.random.default_rng(0).integers(0, 255, (1, 3, *size)).astype(dtype)
    return x / np.float32(255) if dtype == np.float32 else x


def _onnx_call(path: str, size: tuple[int, int], threads: int, dtype=np.uint8):
    s, x = session(path, threads=threads), _input(size, dtype)
    return lambda: s.run(None, {"input": x})


def median_ms(path: str, size: tuple[int, int], threads: int, runs: int, dtype=np.uint8) -> float:
    return round_robin_ms({"call": _onnx_call(path, size, threads, dtype)}, runs)["call"]


def round_robin_ms(calls: dict, runs: int, warmup: int = 3) -> dict:
    """Median wall time (ms) of each call, timed round robin (``runtimes.timing``)."""
    return {k: t.median_ms for k, t in round_robin_calls(calls, runs, warmup).items()}


def conv_ms_by_resolution(path: str, size: tuple[int, int], runs: int, dtype=np.uint8) -> dict:
    """onnxruntime's own profile (1 thread): median kernel time per node, summed over the
    convolutions that write the LR grid and those that write the HR grid, and the rest."""
    import collections

    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
    o.enable_profiling = True
    o.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    s, x = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]), _input(size, dtype)
    for _ in range(runs + 3):
        s.run(None, {"input": x})
    per = collections.defaultdict(list)
    for e in json.loads(Path(s.end_profiling()).read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            shape = list(e["args"]["output_type_shape"][0].values())[0]
            hr = sum(d > max(size) for d in shape[1:]) >= 2  # NCHW or NHWC: two spatial dims beyond LR
            per[(e["name"], e["args"]["op_name"], hr)].append(e["dur"])
    out = {"conv_lr_ms": 0.0, "conv_hr_ms": 0.0, "other_ms": 0.0}
    for (_, op, hr), d in per.items():
        key = ("conv_hr_ms" if hr else "conv_lr_ms") if "Conv" in op else "other_ms"
        out[key] += statistics.median(d[3:]) / 1000
    return out


def conv_layer_models(tmp: Path, c: int = 36) -> tuple[str, str]:
    """One 3x3 ``c -> c`` convolution in FP32 and its quantize_static QDQ twin: the int8
    speed-up this CPU's kernels allow on the layer that dominates the Basic net's body."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(0, 0.1, (c, c, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["input", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(c, np.float32), "b")])
    fp32 = str(tmp / "conv_fp32.onnx")
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), fp32)
    qs = str(tmp / "conv_qs.onnx")
    quantize_static_model(fp32, qs, channels=c)
    return fp32, qs


def layer_call(path: str, c: int, size: tuple[int, int], threads: int):
    s = session(path, threads=threads)
    x = np.random.default_rng(0).random((1, c, *size), dtype=np.float32)
    return lambda: s.run(None, {"input": x})


def quantize_static_model(fp32_path: str, out: str, channels: int = 3) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.items = iter([{"input": rng.random((1, channels, 64, 64), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(fp32_path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def parity(checkpoint: str, tmp: Path) -> dict:
    """PyTorch fake-quant vs numpy reference vs onnxruntime on Set5+Set14; ADQ static vs dynamic."""
    par = {}
    e = export(checkpoint, tmp / f"{Path(checkpoint).stem}.onnx", log=lambda m: None)
    ed = export(checkpoint, tmp / f"{Path(checkpoint).stem}_dyn.onnx", adq="dynamic", log=lambda m: None)
    runners = {"torch": grey_aware(torch_runner(e.model)),
               "reference": grey_aware(reference.runner(e.graph)),
               "reference_ort": grey_aware(reference.runner(e.lowered, "onnxruntime")),
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
        deltas = delta_psnr_db(par[k], base)
        ident = [float(np.mean(outs[k][j] == outs["reference_ort" if k.startswith("onnxruntime") else "torch"][j]))
                 for j in outs[k]]
        summary[k] = {"max_abs_delta_psnr_db": max(abs(d) for d in deltas),
                      "min_identical_pixels": min(ident),
                      "mean_psnr_db": {s: par[k]["sets"][s]["mean"]["psnr_db"] for s in base["sets"]}}
        print(k, summary[k], flush=True)
    return {"checkpoint": checkpoint, "summary": summary}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", nargs="*", default=[], help="trained checkpoints for the parity measurement")
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
            calls = {"fp32_ms": _onnx_call(fp32, size, threads),
                     "quantize_static_ms": _onnx_call(qs, size, threads, np.float32)}
            for name in ("basic_w8a8", "basic_mixed", "basic_w4a4"):
                calls[f"{name}_ms"] = _onnx_call(str(tmp / f"{name}.onnx"), size, threads)
            row = {"size": f"{size[1]}x{size[0]}", "threads": threads, **round_robin_ms(calls, args.runs)}
            row["w8a8_speedup_vs_fp32"] = row["fp32_ms"] / row["basic_w8a8_ms"]
            row["w8a8_vs_quantize_static"] = row["quantize_static_ms"] / row["basic_w8a8_ms"]
            speed.append(row)
            print(row, flush=True)
    res["speed"] = speed
    # Where the time goes (128x128, 1 thread) and what one int8 conv layer gains here.
    res["breakdown_128x128_1thread"] = {
        "fp32": conv_ms_by_resolution(fp32, (128, 128), args.runs),
        "quantize_static": conv_ms_by_resolution(qs, (128, 128), args.runs, np.float32),
        "basic_w8a8": conv_ms_by_resolution(str(tmp / "basic_w8a8.onnx"), (128, 128), args.runs)}
    print(res["breakdown_128x128_1thread"], flush=True)
    layer_fp32, layer_qs = conv_layer_models(tmp)
    res["conv_layer_3x3_36ch"] = [
        {"size": "128x128", "threads": t, **round_robin_ms({"fp32_ms": layer_call(layer_fp32, 36, (128, 128), t),
                                                           "quantize_static_ms": layer_call(layer_qs, 36, (128, 128), t)},
                                                          args.runs)} for t in (1, 2)]
    print(res["conv_layer_3x3_36ch"], flush=True)

    res["parity"] = [parity(ck, tmp) for ck in args.checkpoint]

    OUT.mkdir(exist_ok=True)
    (OUT / "onnx_export.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# ONNX export", "", f"Command: `python benchmarks/onnx_export.py {' '.join(sys.argv[1:])}`  ",
          f"Machine: {res['machine']}, onnxruntime {res['onnxruntime']}. Medians of {args.runs} runs after 3 warm-up runs; "
          "the models of one row are timed in turn within each round (round robin), so their ratios share the load.", "",
          "| zoo entry | convs | float convs after ORT_ENABLE_ALL | export (s) |", "|---|---|---|---|"]
    md += [f"| {n} | {v['convs']} | {v['float_convs_after_ort']} | {v['export_s']} |" for n, v in res["zoo"].items()]
    md += ["", "| LR size | threads | FP32 (ms) | quantize_static (ms) | w8a8 (ms) | mixed (ms) | w4a4 (ms) | w8a8 vs FP32 | w8a8 vs quantize_static |",
           "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['size']} | {r['threads']} | {r['fp32_ms']:.1f} | {r['quantize_static_ms']:.1f} | {r['basic_w8a8_ms']:.1f} | "
           f"{r['basic_mixed_ms']:.1f} | {r['basic_w4a4_ms']:.1f} | {r['w8a8_speedup_vs_fp32']:.2f}x | {r['w8a8_vs_quantize_static']:.2f}x |"
           for r in speed]
    b = res["breakdown_128x128_1thread"]
    md += ["", "Where the time goes (LR 128x128, 1 thread; onnxruntime's profile, median kernel time per node, summed). "
           "LR convs: head, body, upsample; HR convs: the tail at 512x512 (3 <-> 36 channels) and its input requantisation.", "",
           "| model | LR convs (ms) | HR convs (ms) | other (ms) |", "|---|---|---|---|"]
    md += [f"| {k} | {v['conv_lr_ms']:.1f} | {v['conv_hr_ms']:.1f} | {v['other_ms']:.1f} |" for k, v in b.items()]
    md += ["", "One 3x3 conv, 36 -> 36 channels, LR 128x128 (float I/O): FP32 vs its quantize_static int8 twin, "
           "the int8 gain this CPU's kernels give on the body's main layer:", "",
           "| threads | FP32 (ms) | int8 quantize_static (ms) | speed-up |", "|---|---|---|---|"]
    md += [f"| {r['threads']} | {r['fp32_ms']:.2f} | {r['quantize_static_ms']:.2f} | {r['fp32_ms'] / r['quantize_static_ms']:.2f}x |"
           for r in res["conv_layer_3x3_36ch"]]
    for p in res["parity"]:
        md += ["", f"Parity on Set5+Set14, checkpoint `{p['checkpoint']}` (delta PSNR vs PyTorch fake-quant; "
               "identical pixels vs PyTorch, or vs the reference in onnxruntime arithmetic for onnxruntime):", "",
               "| backend | max abs dPSNR (dB) | min identical pixels | Set5 (dB) | Set14 (dB) |", "|---|---|---|---|---|"]
        md += [f"| {k} | {v['max_abs_delta_psnr_db']:.4f} | {v['min_identical_pixels'] * 100:.3f}% | "
               f"{v['mean_psnr_db']['Set5']:.3f} | {v['mean_psnr_db']['Set14']:.3f} |" for k, v in p["summary"].items()]
    (OUT / "onnx_export.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
