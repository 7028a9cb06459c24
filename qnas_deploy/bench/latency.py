"""``qnas-deploy bench latency``: how fast an exported file runs on this machine.

Every (file, backend, threads) measurement runs in a fresh child process, so that the
peak resident memory it reports belongs to that model and runtime alone, and one
runtime's thread pool does not disturb the next. Needs only the runtime (onnxruntime
or ai-edge-litert / tflite-runtime) and this package: it runs on a board as it does here.
"""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from ..errors import BadInput


def _kernels_for(path: str, tflite_kernels) -> list[str]:
    if path.lower().endswith(".onnx"):
        return ["onnxruntime"]
    if path.lower().endswith(".tflite"):
        return [f"litert_{k}" for k in tflite_kernels]
    raise BadInput(f"{path}: expected an exported .onnx or .tflite file")


def measure(path: str, backend: str, size: tuple[int, int], threads: int, runs: int, warmup: int) -> dict:
    """Time ``runs`` inferences on one random LR image of ``size`` (H, W), after ``warmup``."""
    base_kb = _peak_rss_kb()
    run = _runner(path, backend, threads)
    x = np.random.default_rng(0).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    for _ in range(max(warmup, 1)):  # the first call also sizes TFLite's tensors
        run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t) * 1000)
    peak_kb = _peak_rss_kb()
    t = np.array(times)
    return {"file": str(path), "backend": backend, "size": f"{size[0]}x{size[1]}", "threads": threads,
            "runs": runs, "warmup": warmup, "median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "min_ms": float(t.min()),
            "peak_rss_mb": peak_kb / 1024, "model_rss_mb": (peak_kb - base_kb) / 1024}


def _peak_rss_kb() -> int:
    """Peak resident memory of this process image. Linux's VmHWM, not ``ru_maxrss``: the
    latter keeps the high-water mark of the parent that forked this child before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _runner(path: str, backend: str, threads: int):
    """The runtime alone (no PyTorch import: a board needs only the runtime and this package)."""
    if backend == "onnxruntime":
        from ..exporters.onnx_runner import OnnxModelRunner, session

        return OnnxModelRunner(session(path, threads))
    from ..exporters.tflite import read_metadata
    from ..exporters.tflite_runner import TfliteModelRunner, interpreter

    data = Path(path).read_bytes()
    io = read_metadata(data).get("qnas.io", "uint8")
    return TfliteModelRunner(interpreter(data, threads, backend != "litert_builtin"), io)


def latency(files: list[str], size: tuple[int, int], threads: list[int], runs: int = 50, warmup: int = 5,
            tflite_kernels=("xnnpack", "builtin"), isolate: bool = True, progress: bool = True) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from tqdm import tqdm

    for f in files:
        if not Path(f).is_file():
            raise BadInput(f"{f}: no such model file")
    jobs = [(f, b, t) for f in files for b in _kernels_for(f, tflite_kernels) for t in threads]
    rows = []
    for f, b, t in tqdm(jobs, desc="latency", disable=not progress, leave=False):
        if isolate:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                rows.append(pool.submit(measure, f, b, size, t, runs, warmup).result())
        else:
            rows.append(measure(f, b, size, t, runs, warmup))
    return {"machine": machine(), "size": f"{size[0]}x{size[1]}", "rows": rows}


def machine() -> dict:
    import os

    info = {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        from importlib.metadata import version

        info["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - not installed
        pass
    return info


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Latency at LR {result['size']} (HxW) on {m['machine']} ({m['cpus']} CPUs), "
             f"onnxruntime {m.get('onnxruntime', '-')}, LiteRT {m.get('ai_edge_litert', '-')}.", "",
             "| file | backend | threads | median (ms) | p10 (ms) | p90 (ms) | peak RSS (MB) | runs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {Path(r['file']).name} | {r['backend']} | {r['threads']} | {r['median_ms']:.1f} | "
                     f"{r['p10_ms']:.1f} | {r['p90_ms']:.1f} | {r['peak_rss_mb']:.0f} | {r['runs']} |")
    return "\n".join(lines) + "\n"
