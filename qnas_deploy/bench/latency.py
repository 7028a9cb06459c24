"""``qnas-deploy bench latency``: how fast an exported file runs on this machine.

Every (file, backend, threads) measurement runs in a fresh child process
(``runtimes.timing``), so that the peak resident memory it reports belongs to that model
and runtime alone, and one runtime's thread pool does not disturb the next. Needs only
the runtime (onnxruntime or ai-edge-litert / tflite-runtime) and this package: it runs on
a board as it does here.

``machine="aarch64:CPU"`` times the files in the aarch64 builds of the runtimes under qemu
(``emulation.aarch64``): an emulator's timings, recorded and printed as such, useful to
compare kernels and files with each other there, never as a phone's latency.
"""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import BadInput
from ..runtimes import read_metadata, runtimes_for
from ..runtimes.timing import Job, round_robin


@dataclass(frozen=True)
class LatencyRow:
    file: str
    backend: str                  # a ``RUNTIMES`` name
    size: str                     # LR "HxW"
    threads: int
    runs: int
    warmup: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    peak_rss_mb: float            # the measuring process's peak
    model_rss_mb: float           # ... less what it held before the model was loaded

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LatencyResult:
    machine: dict
    size: str
    rows: list[LatencyRow]

    def to_dict(self) -> dict:
        return {"machine": self.machine, "size": self.size, "rows": [r.to_dict() for r in self.rows]}


def measure(path: str, backend: str, size: tuple[int, int], threads: int, runs: int, warmup: int,
            isolate: bool = True) -> LatencyRow:
    """Time ``runs`` inferences of the image runner on one random LR image of ``size`` (H, W),
    after ``warmup``; ``isolate``: in a child process of its own (its peak memory is the model's)."""
    r = round_robin([Job(str(path), backend, tuple(size), image=True)], threads, runs, warmup, isolate=isolate)
    t = r.timings[0]
    return LatencyRow(str(path), backend, f"{size[0]}x{size[1]}", threads, runs, warmup, t.median_ms, t.p10_ms,
                      t.p90_ms, t.min_ms, r.peak_rss_kb / 1024, (r.peak_rss_kb - r.base_rss_kb) / 1024)


def measure_emulated(env, cpu, path: str, backend: str, size: tuple[int, int], threads: int, runs: int,
                      warmup: int) -> LatencyRow:
    """:func:`measure` in the aarch64 environment ``env`` on ``cpu`` (emulated under qemu)."""
    from ..emulation import aarch64

    r = aarch64.round_robin(env, cpu, [Job(str(path), backend, tuple(size), image=True)], threads, runs, warmup)
    t = r.timings[0]
    return LatencyRow(str(path), backend, f"{size[0]}x{size[1]}", threads, runs, warmup, t.median_ms, t.p10_ms,
                      t.p90_ms, t.min_ms, r.peak_rss_kb / 1024, (r.peak_rss_kb - r.base_rss_kb) / 1024)


def latency(files: list[str], size: tuple[int, int], threads: list[int], runs: int = 50, warmup: int = 5,
            tflite_kernels=("xnnpack", "builtin"), isolate: bool = True, progress: bool = True,
            machine: str | None = None, onnx_runtimes=("onnxruntime",)) -> LatencyResult:
    """``machine``: ``aarch64[:CPU]`` to time the files there (emulated), None for this one."""
    from .._progress import bar

    env = cpu = None
    if machine:
        from ..emulation import aarch64

        cpu = aarch64.parse_target(machine)
        env = aarch64.load()

    for f in files:
        if not Path(f).is_file():
            raise BadInput(f"{f}: no such model file")
    pairs = [(f, rt) for f in files for rt in runtimes_for(f, tflite_kernels, onnx_runtimes)]
    # Every file read and loaded here, at the size asked, before any is timed: a corrupt
    # one is one error line naming it now, not a failure in a child process mid-bar.
    for f in files:
        read_metadata(f)
    for f, rt in pairs:
        rt.timed_call(f, rt.input_shape(*size), 1)
    jobs = [(f, rt.name, t) for f, rt in pairs for t in threads]
    with bar(len(jobs), "latency", progress) as pbar:
        rows = []
        for f, b, t in jobs:
            rows.append(measure_emulated(env, cpu, f, b, size, t, runs, warmup) if env
                        else measure(f, b, size, t, runs, warmup, isolate))
            pbar.update(1)
    if env:
        from ..emulation import aarch64

        return LatencyResult(aarch64.machine(env, cpu), f"{size[0]}x{size[1]}", rows)
    return LatencyResult(host_machine(), f"{size[0]}x{size[1]}", rows)


def host_machine() -> dict:
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


def markdown(result: LatencyResult) -> str:
    m = result.machine
    where = f"{m['machine']} {m['cpu']}, EMULATED ({m['emulated']})" if m.get("emulated") else m["machine"]
    lines = [f"Latency at LR {result.size} (HxW) on {where} ({m['cpus']} CPUs), "
             f"onnxruntime {m.get('onnxruntime', '-')}, LiteRT {m.get('ai_edge_litert', '-')}.", "",
             "| file | backend | threads | median (ms) | p10 (ms) | p90 (ms) | peak RSS (MB) | runs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        lines.append(f"| {Path(r.file).name} | {r.backend} | {r.threads} | {r.median_ms:.1f} | "
                     f"{r.p10_ms:.1f} | {r.p90_ms:.1f} | {r.peak_rss_mb:.0f} | {r.runs} |")
    return "\n".join(lines) + "\n"
