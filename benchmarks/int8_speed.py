"""Int8 against float, per quantized zoo entry: is quantization worth it on this CPU?

    python benchmarks/int8_speed.py [--entries a,b] [--runs 7] [--warmup 2] [--work DIR] [--redo]

For every quantized zoo entry (initialised weights: latency does not depend on their
values, only on the kernels the file selects), each file the project exports for a runtime
and the FP32 twin of the same network (every bit width 32) are timed in one child process,
round robin (``runtimes.timing``), so that each int8 / FP32 ratio is measured under one load:

* onnxruntime: the ``onnxruntime`` target's file (7-bit weight grid, so that every 8-bit
  conv stays in the u8s8 kernel: ``--for-target onnxruntime``), with onnxruntime's NHWC
  transformer on (its default) and off (``onnxruntime-nchw``), and the float twin;
* LiteRT + XNNPACK: the ``litert-xnnpack`` file (full grid) and the float twin;

at LR 128x128 and 180x320 (one HD frame out: 720x1280), 1 and 2 intra-op threads, the image
runner (uint8 RGB in and out) as an application calls it. Also: ms per HD frame, the MACs of
the network at that size and the achieved GMAC/s against this CPU's FP32 peak, estimated as
the best one-thread float GEMM throughput measured here (``torch.mm``, MKL/oneDNN, large
square matrices), stated beside the nominal figure from the ISA.

Results: ``results/int8_speed.json`` and ``.md``; each entry's rows are kept as they are
measured (``--redo`` measures again), so an interrupted run continues.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
SIZES = ((128, 128), (180, 320))
THREADS = (1, 2)
HD = (180, 320)


def export_files(spec, work: Path, size) -> dict:
    """The files this benchmark times, by role: int8 per runtime target, and the FP32 twin."""
    from qnas_deploy.exporters import targets
    from qnas_deploy.exporters.export import ExportOptions, lower, metadata, prepare, write
    from report import fp32_twin  # benchmarks/report.py: the same twin the report times

    built = {}
    plans = [("onnx_int8", dataclasses.replace(spec, weight_grid=targets.get("onnxruntime").weight_grid), "onnx",
              "onnxruntime"),
             ("tflite_int8", spec, "tflite", "litert-xnnpack"),
             ("onnx_fp32", fp32_twin(spec), "onnx", "onnxruntime"),
             ("tflite_fp32", fp32_twin(spec), "tflite", "litert-xnnpack")]
    for role, s, fmt, target in plans:
        p = prepare(s, log=lambda _: None)
        opts = ExportOptions(format=fmt, target=target, input_size=size, simplify=False)
        path = work / f"{spec.name}.{role}.{fmt}"
        write(lower(p.model, opts), path, opts, metadata(p, opts))
        built[role] = str(path)
    return built


# (label, file role, runtime) timed together in one round robin
JOBS = (("ort_int8", "onnx_int8", "onnxruntime"), ("ort_nchw_int8", "onnx_int8", "onnxruntime-nchw"),
        ("ort_fp32", "onnx_fp32", "onnxruntime"),
        ("xnn_int8", "tflite_int8", "litert-xnnpack"), ("xnn_fp32", "tflite_fp32", "litert-xnnpack"))


def measure_entry(name: str, work: Path, runs: int, warmup: int) -> dict:
    import torch

    from qnas_deploy.cost.bitops import layer_costs
    from qnas_deploy.runtimes.timing import Job, round_robin
    from qnas_deploy.zoo import load_zoo

    torch.set_num_threads(2)
    spec = load_zoo(name)
    rows = []
    for size in SIZES:
        files = export_files(spec, work, size)
        jobs = [Job(files[role], rt, size, image=True) for _, role, rt in JOBS]
        for threads in THREADS:
            t = round_robin(jobs, threads, runs, warmup).timings
            ms = {label: t[i].median_ms for i, (label, _, _) in enumerate(JOBS)}
            rows.append({"size": f"{size[0]}x{size[1]}", "threads": threads, "median_ms": ms,
                         "p10_ms": {label: t[i].p10_ms for i, (label, _, _) in enumerate(JOBS)},
                         "p90_ms": {label: t[i].p90_ms for i, (label, _, _) in enumerate(JOBS)}})
    macs_hd = layer_costs(spec, HD).macs
    return {"name": name, "space": spec.space, "bits": sorted({l.w_bits for l in spec.layers}),
            "macs_hd": macs_hd, "runs": runs, "warmup": warmup, "rows": rows}


def fp32_peak(threads: int = 1, n: int = 2048, reps: int = 10) -> dict:
    """Best observed one-thread float GEMM throughput: the FP32 peak the CPU gives here."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(2)
    return {"method": f"torch.mm {n}x{n} float32, {threads} thread, best of {reps}", "gmac_s": n ** 3 / best / 1e9}


def isa() -> dict:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    return {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "avx_vnni": "avx_vnni" in flags, "fp32_fma_lanes": lanes,
            "nominal_mac_per_cycle": 2 * lanes,  # two FMA ports, as on every server core since Haswell
            }


def markdown(res: dict) -> str:
    peak = res["peak"]["gmac_s"]
    lines = [
        "# Int8 against float, per quantized zoo entry",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {', '.join(f'{k} {v}' for k, v in res['machine'].items())}.  ",
        f"FP32 peak (one core): {peak:.1f} GMAC/s, {res['peak']['method']} "
        f"(nominal: {res['isa']['nominal_mac_per_cycle']} FP32 MAC/cycle/core with "
        f"{'AVX-512' if res['isa']['avx512f'] else 'AVX2'} FMA; the clock of this virtual CPU is not reported). "
        f"VNNI: {'yes' if res['isa']['avx512_vnni'] or res['isa']['avx_vnni'] else 'no'}.",
        "",
        "Each entry's files timed together, round robin, in one child process (median of the rounds); "
        "FP32 / int8 > 1 means int8 is faster. onnxruntime: the `onnxruntime` target's file (7-bit weight grid) "
        "with the NHWC transformer on (default) and off (`onnxruntime-nchw`); XNNPACK: the LiteRT file. "
        "Initialised weights (the kernels do not depend on the values).",
        "",
        "| entry | LR | threads | ORT int8 (ms) | ORT NCHW int8 (ms) | ORT FP32 (ms) | ORT FP32/int8 | "
        "XNN int8 (ms) | XNN FP32 (ms) | XNN FP32/int8 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in res["entries"]:
        for r in e["rows"]:
            m = r["median_ms"]
            best_ort = min(m["ort_int8"], m["ort_nchw_int8"])
            lines.append(
                f"| {e['name']} | {r['size']} | {r['threads']} | {m['ort_int8']:.1f} | {m['ort_nchw_int8']:.1f} | "
                f"{m['ort_fp32']:.1f} | {m['ort_fp32'] / best_ort:.2f}x | {m['xnn_int8']:.1f} | {m['xnn_fp32']:.1f} | "
                f"{m['xnn_fp32'] / m['xnn_int8']:.2f}x |")
    lines += ["", f"One HD frame (LR {HD[0]}x{HD[1]} -> {HD[0] * 4}x{HD[1] * 4}), 1 thread: the fastest exact int8 "
              f"configuration, and its achieved GMAC/s against the FP32 peak above.", "",
              "| entry | GMAC per frame | ORT int8 (ms) | XNN int8 (ms) | best (ms) | GMAC/s | of FP32 peak |",
              "|---|---|---|---|---|---|---|"]
    for e in res["entries"]:
        r = next(r for r in e["rows"] if r["size"] == f"{HD[0]}x{HD[1]}" and r["threads"] == 1)
        m = r["median_ms"]
        ort = min(m["ort_int8"], m["ort_nchw_int8"])
        best = min(ort, m["xnn_int8"])
        gmacs = e["macs_hd"] / 1e9
        lines.append(f"| {e['name']} | {gmacs:.2f} | {ort:.1f} | {m['xnn_int8']:.1f} | {best:.1f} | "
                     f"{gmacs / best * 1e3:.1f} | {gmacs / best * 1e3 / peak:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", help="comma-separated zoo names (default: every quantized entry)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--work", default="/tmp/int8_speed")
    ap.add_argument("--redo", action="store_true", help="measure entries already in the results again")
    ap.add_argument("--out", default=str(OUT / "int8_speed"))
    args = ap.parse_args(argv)

    from qnas_deploy.bench.latency import host_machine
    from qnas_deploy.zoo import load_zoo, names

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    json_path = out.with_suffix(".json")
    old = json.loads(json_path.read_text()) if json_path.is_file() and not args.redo else {"entries": []}
    done = {e["name"]: e for e in old["entries"]}
    wanted = args.entries.split(",") if args.entries else [n for n in names() if not load_zoo(n).float_only]
    res = {"command": "python benchmarks/int8_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": host_machine(), "isa": isa(), "peak": fp32_peak(), "entries": []}
    for name in wanted:
        if name not in done:
            t0 = time.perf_counter()
            done[name] = measure_entry(name, work, args.runs, args.warmup)
            print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            res["entries"] = [done[n] for n in wanted if n in done]
            json_path.write_text(json.dumps(res, indent=1) + "\n")
    res["entries"] = [done[n] for n in wanted]
    json_path.write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
