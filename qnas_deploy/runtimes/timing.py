"""Timing exported files in their runtimes: round-robin medians, in a child process.

Every measurement of the package goes through :func:`round_robin`. Round robin: every
round times each job once. On a shared machine a burst of load from elsewhere then lands
on one or two samples of many jobs, which their medians drop, instead of on every sample
of the one job being timed at that moment; jobs timed together are compared as ratios
measured under the same conditions.

The rounds run in a spawned child: one runtime's thread pool does not disturb the next
measurement, and the peak resident memory the child reports belongs to the jobs alone.
No PyTorch here either: this runs on a board that has only the runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Job:
    path: str
    runtime: str                  # a ``RUNTIMES`` name
    shape: tuple[int, ...]        # the raw input tensor's shape; with ``image``, the LR image's (H, W)
    image: bool = False           # time the image runner (uint8 HxWx3 in and out), as an application calls it


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float


@dataclass(frozen=True)
class Rounds:
    timings: list[Timing]         # one per job, in the jobs' order
    base_rss_kb: int              # the process's peak resident memory before any job was loaded
    peak_rss_kb: int              # ... and after every job ran


def round_robin(jobs: list[Job], threads: int | None, runs: int, warmup: int, progress: str | bool = False,
                isolate: bool = True) -> Rounds:
    """Time every job ``runs`` times, one call of each per round, after ``warmup`` calls of
    each (at least one: the first call also sizes TFLite's tensors). ``isolate``: in a
    spawned child process (``False``: in this one)."""
    if isolate:
        return in_child(round_robin, jobs, threads, runs, warmup, progress, False)
    base_kb = peak_rss_kb()
    rng = np.random.default_rng(0)
    calls = {i: _call(job, threads, rng) for i, job in enumerate(jobs)}
    timings = round_robin_calls(calls, runs, max(warmup, 1), progress)
    return Rounds([timings[i] for i in range(len(jobs))], base_kb, peak_rss_kb())


def round_robin_calls(calls: dict, runs: int, warmup: int = 1, progress: str | bool = False) -> dict:
    """``{key: Timing}`` of callables timed in this process, round robin, after ``warmup``
    untimed calls of each: what :func:`round_robin` runs in its child, and what a benchmark
    uses for calls that are not files (a quantize_static model, one layer)."""
    import time

    from tqdm import tqdm

    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict = {k: [] for k in calls}
    for _ in tqdm(range(runs), desc=progress or "", disable=not progress, leave=False):
        for k, call in calls.items():
            t = time.perf_counter()
            call()
            times[k].append((time.perf_counter() - t) * 1000)
    return {k: _stats(np.array(v)) for k, v in times.items()}


def _call(job: Job, threads: int | None, rng: np.random.Generator):
    from . import RUNTIMES

    runtime = RUNTIMES[job.runtime]
    if not job.image:
        return runtime.timed_call(job.path, job.shape, threads, rng)
    run = runtime.image_runner(job.path, threads)
    x = rng.integers(0, 256, (*job.shape, 3), dtype=np.uint8)
    return lambda: run(x)


def _stats(t: np.ndarray) -> Timing:
    return Timing(float(np.median(t)), float(np.percentile(t, 10)), float(np.percentile(t, 90)), float(t.min()))


def random_input(rng: np.random.Generator, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Random values over the whole range of an integer ``dtype`` ([0, 1) for a float one)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)


def in_child(fn, *args):
    """``fn(*args)`` in a fresh spawned process (not forked: no state of this one comes along)."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def peak_rss_kb() -> int:
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
