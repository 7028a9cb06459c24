"""TFLite export: parity, latency and size. Writes benchmarks/results/tflite_export.{json,md}.

    python benchmarks/tflite_export.py [--checkpoint model.pt] [--runs 10]

* with --checkpoint: Set5/Set14 parity of LiteRT (XNNPACK, and builtin kernels) against
  the PyTorch fake-quant model (delta PSNR per image) and against the numpy reference in
  the matching arithmetic ("litert-xnnpack" / "litert-builtin": identical uint8 pixels);
* latency: LiteRT with XNNPACK on and off, 1 and 2 threads, LR 128x128 and 320x180,
  beside the int8 and FP32 ONNX files of the same networks in onnxruntime, measured in
  the same run (medians after 3 warm-up runs);
* file size: TFLite vs ONNX vs the weights' own bit count, per zoo entry.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

from qnas_deploy.cost import summary as cost_summary
from qnas_deploy.evaluate import delta_psnr_db, evaluate_sets
from qnas_deploy.exporters import reference
from qnas_deploy.exporters.export import export
from qnas_deploy.runtimes.litert import open_tflite
from qnas_deploy.runtimes.timing import Job, round_robin
from qnas_deploy.infer import grey_aware, torch_runner
from qnas_deploy.zoo import load_zoo, names


OUT = Path(__file__).parent / "results"


def file_median_ms(path: str, runtime: str, size: tuple[int, int], threads: int, runs: int) -> float:
    """Median ms of one raw call of ``path`` in ``runtime`` (``runtimes.RUNTIMES``) on a random LR image."""
    from qnas_deploy.runtimes import RUNTIMES

    job = Job(path, runtime, RUNTIMES[runtime].input_shape(*size))
    return round_robin([job], threads, runs, 3, isolate=False).timings[0].median_ms


def onnx_median_ms(path: str, size: tuple[int, int], threads: int, runs: int) -> float:
    return file_median_ms(path, "onnxruntime", size, threads, runs)


def litert_median_ms(path: str, size: tuple[int, int], threads: int, xnnpack: bool, runs: int) -> float:
    return file_median_ms(path, "litert-xnnpack" if xnnpack else "litert-builtin", size, threads, runs)


def weight_bits(spec) -> int:
    """Bits the conv weights need at their own bit widths (no containers, no biases)."""
    from qnas_deploy.spaces import build_model

    model = build_model(spec)
    total = 0
    for m in model.modules():
        if hasattr(m, "weight_quant") and hasattr(m, "weight"):
            bits = m.w_bits if getattr(m, "quantized", False) else 32
            total += m.weight.numel() * bits
    return total


def parity(checkpoint: str, tmp: Path) -> dict:
    e = export(checkpoint, tmp / "ck.tflite", fmt="tflite", log=lambda m: None)
    runners = {"torch": (grey_aware(torch_runner(e.model)), None),
               "litert-xnnpack": (grey_aware(open_tflite(e.path, threads=2).run), "litert-xnnpack"),
               "litert-builtin": (grey_aware(open_tflite(e.path, threads=2, kernels="builtin").run), "litert-builtin")}
    refs = {k: grey_aware(reference.runner(e.lowered, k)) for k in ("litert-xnnpack", "litert-builtin")}
    scores, identical = {}, {}
    for k, (run, mode) in runners.items():
        same = []

        def compared(lr, run=run, mode=mode, same=same):
            y = run(lr)
            if mode:
                same.append(float(np.mean(y == refs[mode](lr))))
            return y
        scores[k] = evaluate_sets(compared, ["Set5", "Set14"], 4)
        identical[k] = same
    base = scores["torch"]
    out = {}
    for k in runners:
        if k == "torch":
            continue
        deltas = delta_psnr_db(scores[k], base)
        out[k] = {"max_abs_delta_psnr_db": max(abs(d) for d in deltas),
                  "min_identical_pixels": min(identical[k]),
                  "mean_psnr_db": {s: scores[k]["sets"][s]["mean"]["psnr_db"] for s in base["sets"]},
                  "reference_arithmetic": runners[k][1]}
        print(k, out[k], flush=True)
    out["torch"] = {"mean_psnr_db": {s: base["sets"][s]["mean"]["psnr_db"] for s in base["sets"]}}
    return {"checkpoint": checkpoint, "summary": out}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="trained checkpoint for the parity measurement")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    import ai_edge_litert
    import onnxruntime

    res: dict = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                 "litert": getattr(ai_edge_litert, "__version__", "?"), "onnxruntime": onnxruntime.__version__,
                 "zoo": {}}
    for name in names():
        t = export(name, tmp / f"{name}.tflite", fmt="tflite", log=lambda m: None)
        o = export(name, tmp / f"{name}.onnx", log=lambda m: None)
        spec = load_zoo(name)
        res["zoo"][name] = {"tflite_bytes": Path(t.path).stat().st_size, "onnx_bytes": Path(o.path).stat().st_size,
                            "weight_bytes_at_their_bits": weight_bits(spec) // 8,
                            "bitops_32x32": cost_summary(spec)["bitops_32x32"],
                            "export_s": round(t.seconds, 2)}
        if name == "basic_w4a4":
            p = export(name, tmp / f"{name}_int4.tflite", fmt="tflite", int4="packed", target="litert-builtin",
                       log=lambda m: None)
            res["zoo"][name]["tflite_int4_packed_bytes"] = Path(p.path).stat().st_size
        print(name, res["zoo"][name], flush=True)

    speed = []
    for size in ((128, 128), (180, 320)):
        for threads in (1, 2):
            row = {"size": f"{size[1]}x{size[0]}", "threads": threads,
                   "onnx_fp32_ms": onnx_median_ms(str(tmp / "basic_fp32.onnx"), size, threads, args.runs)}
            for name in ("basic_w8a8", "basic_mixed", "rfdn_mixed"):
                row[f"{name}_onnx_ms"] = onnx_median_ms(str(tmp / f"{name}.onnx"), size, threads, args.runs)
                for xnn in (True, False):
                    key = f"{name}_litert-{'xnnpack' if xnn else 'builtin'}_ms"
                    row[key] = litert_median_ms(str(tmp / f"{name}.tflite"), size, threads, xnn, args.runs)
            row["litert_fp32_xnnpack_ms"] = litert_median_ms(str(tmp / "basic_fp32.tflite"), size, threads, True,
                                                             args.runs)
            speed.append(row)
            print(row, flush=True)
    res["speed"] = speed
    if args.checkpoint:
        res["parity"] = parity(args.checkpoint, tmp)

    OUT.mkdir(exist_ok=True)
    (OUT / "tflite_export.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# TFLite export", "", f"Command: `python benchmarks/tflite_export.py {' '.join(sys.argv[1:])}`  ",
          f"Machine: {res['machine']}, LiteRT {res['litert']}, onnxruntime {res['onnxruntime']}. "
          f"Medians of {args.runs} runs after 3 warm-up runs.", "",
          "| zoo entry | TFLite (bytes) | ONNX (bytes) | weights at their bit widths (bytes) | export (s) |",
          "|---|---|---|---|---|"]
    md += [f"| {n} | {v['tflite_bytes']}" + (f" (packed INT4: {v['tflite_int4_packed_bytes']})"
                                             if "tflite_int4_packed_bytes" in v else "")
           + f" | {v['onnx_bytes']} | {v['weight_bytes_at_their_bits']} | {v['export_s']} |"
           for n, v in res["zoo"].items()]
    md += ["", "Latency (ms). ORT = onnxruntime int8 QDQ; XNN / builtin = LiteRT with / without XNNPACK.", "",
           "| LR | threads | ORT FP32 | LiteRT FP32 XNN | w8a8 ORT | w8a8 XNN | w8a8 builtin | mixed ORT | mixed XNN | "
           "mixed builtin | rfdn ORT | rfdn XNN | rfdn builtin |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['size']} | {r['threads']} | {r['onnx_fp32_ms']:.1f} | {r['litert_fp32_xnnpack_ms']:.1f} | "
           + " | ".join(f"{r[f'{n}_onnx_ms']:.1f} | {r[f'{n}_litert-xnnpack_ms']:.1f} | {r[f'{n}_litert-builtin_ms']:.1f}"
                        for n in ("basic_w8a8", "basic_mixed", "rfdn_mixed")) + " |" for r in speed]
    if "parity" in res:
        md += ["", f"Parity on Set5+Set14, checkpoint `{res['parity']['checkpoint']}`: delta PSNR vs PyTorch "
               "fake-quant; identical uint8 pixels vs the numpy reference in the kernels' arithmetic.", "",
               "| backend | reference arithmetic | max abs dPSNR (dB) | min identical pixels | Set5 (dB) | Set14 (dB) |",
               "|---|---|---|---|---|---|"]
        for k, v in res["parity"]["summary"].items():
            if k == "torch":
                md.append(f"| PyTorch fake-quant | - | - | - | {v['mean_psnr_db']['Set5']:.3f} | "
                          f"{v['mean_psnr_db']['Set14']:.3f} |")
            else:
                md.append(f"| {k} | {v['reference_arithmetic']} | {v['max_abs_delta_psnr_db']:.4f} | "
                          f"{v['min_identical_pixels'] * 100:.3f}% | {v['mean_psnr_db']['Set5']:.3f} | "
                          f"{v['mean_psnr_db']['Set14']:.3f} |")
    (OUT / "tflite_export.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
