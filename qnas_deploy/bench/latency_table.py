"""An FBNet-style per-layer latency table: what each searchable layer costs on a backend.

Every candidate of a space's searchable layers (operation x weight bits x activation bits
at the channels and input size its slot has) is lowered on its own, exactly as the
exporter lowers it inside a network (the requantisation onto its activation grid, its
convs, the requantisation of its result), serialized for the backend and timed alone.
What the layers do not cover (the fixed ops: additions, depth-to-space, RFDN's ESA and
concatenations, the runtime's per-call overhead) is one constant per backend, the median
of ``measured - sum(layers)`` over a few calibration architectures that are not among the
ones the table is judged on.

A network's predicted latency is ``fixed_ms + sum of its layers' entries``. The table is
JSON so that a search can use it as its hardware cost in place of BitOps.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..errors import BadInput

FORMAT = "qnas-deploy latency table"
BACKENDS = ("onnxruntime", "litert_xnnpack")


def key(op: str, w_bits: int, a_bits: int, c_in: int, c_out: int, height: int, width: int) -> str:
    return f"{op}|w{w_bits}a{a_bits}|{c_in}->{c_out}|{height}x{width}"


def slot_sizes(space: str, size: tuple[int, int], channels: int | None = None,
               blocks: int | None = None) -> dict[str, tuple[int, int, int, int]]:
    """``slot name -> (c_in, c_out, height, width)`` of each searchable layer's input when
    the network's LR input is ``size``, read from forward hooks on a small model."""
    import torch

    from ..infer import min_input_size
    from ..spaces import build_model, get_space
    from ..spec import ArchSpec, LayerSpec

    sp = get_space(space)
    channels, blocks = channels or sp.default_channels, blocks or sp.default_blocks
    slots = sp.layout(channels, blocks, 4)
    spec = ArchSpec(space=space, scale=4, channels=channels, blocks=blocks,
                    layers=tuple(LayerSpec(s.name, sp.ops_for(s.role, "small")[0], 8, 8) for s in slots))
    model = build_model(spec).eval()
    probe = max(16, min_input_size(spec))
    seen: dict[str, tuple[int, int]] = {}

    def hook(name):
        def record(module, args, output):  # returns None: a forward hook's result replaces the output
            seen[name] = tuple(args[0].shape[-2:])
        return record

    hooks = [model.layers[s.name.replace(".", "_")].register_forward_hook(hook(s.name)) for s in slots]
    with torch.no_grad():
        model(torch.zeros(1, 3, probe, probe))
    for h in hooks:
        h.remove()
    return {s.name: (s.c_in, s.c_out, size[0] * seen[s.name][0] // probe, size[1] * seen[s.name][1] // probe)
            for s in slots}


def layer_graph(layer, c_in: int, c_out: int, name: str):
    """The integer graph of one searchable layer between two 8-bit grids of 1/255."""
    from ..exporters.ir import Graph, Tensor
    from ..exporters.lower import _Builder, _convs

    g = _Builder()
    grid = float(np.float32(1 / 255))
    x = g._add(Tensor(f"{name}.x", c_in, grid, 0, 0, 255))
    out = g._add(Tensor(f"{name}.y", c_out, grid, 0, 0, 255))
    y = g.chain(_convs(layer), x.name, out, name)
    return Graph(g.tensors, g.nodes, x.name, y, 1)


def _candidates(space: str, bits, channels: int | None = None, blocks: int | None = None) -> list:
    """Specs that together hold every (slot, operation, bits) candidate at least once."""
    from ..spaces import get_space
    from ..spec import ArchSpec, LayerSpec

    sp = get_space(space)
    channels, blocks = channels or sp.default_channels, blocks or sp.default_blocks
    slots = sp.layout(channels, blocks, 4)
    n_ops = max(len(sp.ops_for(s.role, "small")) for s in slots)
    specs = []
    for i in range(n_ops):
        for b in bits:
            layers = tuple(LayerSpec(s.name, sp.ops_for(s.role, "small")[i % len(sp.ops_for(s.role, "small"))], b, b)
                           for s in slots)
            specs.append(ArchSpec(space=space, scale=4, channels=channels, blocks=blocks,
                                  layers=layers, name=f"{space}_table_{i}_{b}"))
    return specs


def _random_input(rng, dtype, shape) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)


def _runner(path: str, backend: str, shape: tuple[int, ...], threads: int, rng):
    """A closure that runs ``path`` once on ``backend`` with a random input of ``shape``."""
    from ..exporters.onnx_runner import session
    from ..exporters.tflite_runner import interpreter

    if backend == "onnxruntime":
        sess = session(path, threads)
        inp = sess.get_inputs()[0]
        dtype = {"tensor(uint8)": np.uint8, "tensor(int8)": np.int8}.get(inp.type, np.float32)
        feed = {inp.name: _random_input(rng, dtype, shape)}
        return lambda: sess.run(None, feed)
    it = interpreter(path, threads, backend != "litert_builtin")
    d = it.get_input_details()[0]
    x = _random_input(rng, d["dtype"], tuple(d["shape"]))

    def run():
        it.set_tensor(d["index"], x)
        it.invoke()
    return run


def _time_files(jobs: list[tuple[str, str, tuple[int, ...]]], threads: int, runs: int, warmup: int,
                progress: str | bool = False) -> list[float]:
    """Median milliseconds of each (file, backend, input shape); runs in a child process.

    Round robin: every round times each job once. On a shared machine a burst of load from
    elsewhere then lands on one or two samples of many jobs, which their medians drop,
    instead of on every sample of the one job being timed at that moment; the jobs are
    compared as ratios measured under the same conditions."""
    import time

    from tqdm import tqdm

    rng = np.random.default_rng(0)
    runners = [_runner(path, backend, shape, threads, rng) for path, backend, shape in jobs]
    for run in runners:
        for _ in range(max(warmup, 1)):
            run()
    times: list[list[float]] = [[] for _ in runners]
    for _ in tqdm(range(runs), desc=progress or "", disable=not progress, leave=False):
        for t_list, run in zip(times, runners):
            t = time.perf_counter()
            run()
            t_list.append((time.perf_counter() - t) * 1000)
    return [float(np.median(t)) for t in times]


def _in_child(fn, *args):
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def build_table(space: str, size: tuple[int, int], bits=(2, 4, 8), threads: int = 1, runs: int = 10,
                warmup: int = 2, backends=BACKENDS, work: str | Path | None = None, progress: bool = True,
                channels: int | None = None, blocks: int | None = None) -> dict:
    """Measure every layer candidate of ``space`` alone on each backend (``fixed_ms`` not yet set)."""
    import torch
    from tqdm import tqdm

    from ..calibrate import calibrate
    from ..exporters.export import calibration_batches
    from ..exporters.onnx import to_onnx
    from ..exporters.tflite import to_tflite
    from ..spaces import build_model

    work = Path(work or tempfile.mkdtemp(prefix="qnas-table-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = slot_sizes(space, size, channels, blocks)
    entries: dict[str, dict] = {}
    files: list[tuple[str, Path, Path, tuple[int, int, int, int]]] = []
    for spec in tqdm(_candidates(space, bits, channels, blocks), desc=f"table {space}: lower", disable=not progress, leave=False):
        torch.manual_seed(0)
        model = build_model(spec)
        calibrate(model, calibration_batches(spec, None, None))
        model.eval()
        for layer in spec.layers:
            c_in, c_out, h, w = sizes[layer.name]
            k = key(layer.op, layer.w_bits, layer.a_bits, c_in, c_out, h, w)
            if k in entries:
                continue
            entries[k] = {"op": layer.op, "w_bits": layer.w_bits, "a_bits": layer.a_bits, "c_in": c_in,
                          "c_out": c_out, "height": h, "width": w}
            with torch.no_grad():
                graph = layer_graph(model.layers[layer.name.replace(".", "_")], c_in, c_out, layer.name)
            stem = work / f"layer_{len(files)}"
            stem.with_suffix(".onnx").write_bytes(to_onnx(graph).SerializeToString())
            stem.with_suffix(".tflite").write_bytes(to_tflite(graph, io="int8", input_size=(h, w)))
            files.append((k, stem.with_suffix(".onnx"), stem.with_suffix(".tflite"), (c_in, c_out, h, w)))
    for backend in tqdm(backends, desc=f"table {space}: time", disable=not progress, leave=False):
        jobs = [(str(onnx_p), backend, (1, c, h, w)) if backend == "onnxruntime" else
                (str(tfl_p), backend, (1, h, w, c)) for _, onnx_p, tfl_p, (c, _, h, w) in files]
        for (k, *_), ms in zip(files, _in_child(_time_files, jobs, threads, runs, warmup,
                                                progress and f"table {space}: {backend} rounds")):
            entries[k][f"{backend}_ms"] = ms
    return {"format": FORMAT, "version": 1, "space": space, "channels": spec.channels, "blocks": spec.blocks,
            "lr_size": f"{size[0]}x{size[1]}", "threads": threads,
            "runs": runs, "bits": list(bits), "backends": list(backends),
            "slots": {n: {"c_in": v[0], "c_out": v[1], "height": v[2], "width": v[3]} for n, v in sizes.items()},
            "fixed_ms": {b: None for b in backends}, "entries": entries}


def layers_ms(table: dict, layers, backend: str) -> float:
    """The sum of the table's entries for ``layers`` (``(name, op, w_bits, a_bits)`` each)."""
    total = 0.0
    for name, op, wb, ab in layers:
        s = table["slots"].get(name)
        if s is None:
            raise BadInput(f"latency table for {table['space']!r} has no layer {name!r}")
        k = key(op, wb, ab, s["c_in"], s["c_out"], s["height"], s["width"])
        if k not in table["entries"]:
            raise BadInput(f"latency table has no entry {k} (measured bits: {table['bits']})")
        total += table["entries"][k][f"{backend}_ms"]
    return total


def predict(table: dict, spec, backend: str) -> float:
    """Predicted whole-network latency (ms) of ``spec`` at the table's LR size."""
    if spec.space != table["space"]:
        raise BadInput(f"latency table is for the {table['space']!r} space, the spec is {spec.space!r}")
    fixed = table["fixed_ms"].get(backend)
    if fixed is None:
        raise BadInput(f"latency table has no fixed part for {backend} (not calibrated)")
    return fixed + layers_ms(table, [(l.name, l.op, l.w_bits, l.a_bits) for l in spec.layers], backend)


def fit_fixed(table: dict, rows: list[dict]) -> None:
    """Set ``fixed_ms`` per backend: the median of measured minus summed layers over ``rows``."""
    for b in table["backends"]:
        table["fixed_ms"][b] = float(np.median([r[f"{b}_ms"] - layers_ms(table, r["layers"], b) for r in rows]))


def evaluate(table: dict, rows: list[dict]) -> dict:
    """Kendall tau, Pearson r and mean absolute percentage error of the table's predictions."""
    from scipy import stats

    out = {}
    for b in table["backends"]:
        meas = np.array([r[f"{b}_ms"] for r in rows])
        pred = np.array([table["fixed_ms"][b] + layers_ms(table, r["layers"], b) for r in rows])
        for r, p in zip(rows, pred):
            r[f"{b}_predicted_ms"] = float(p)
        out[b] = {"kendall_tau": float(stats.kendalltau(pred, meas).statistic),
                  "pearson_r": float(stats.pearsonr(pred, meas).statistic),
                  "mape": float(np.mean(np.abs(pred - meas) / meas))}
    return out


def search_costs(table: dict, slots, ops_per_slot, bits, backend: str) -> list:
    """Per searchable layer, the table's milliseconds as a ``[operations, bits]`` tensor:
    the search's hardware cost in place of eq. 8's BitOps."""
    import torch

    if backend not in table["backends"]:
        raise BadInput(f"latency table has no {backend} timings (it has {', '.join(table['backends'])})")
    costs = []
    for slot, ops in zip(slots, ops_per_slot):
        s = table["slots"].get(slot.name)
        if s is None:
            raise BadInput(f"latency table has no layer {slot.name!r} (build it with bench bitops --channels/--blocks "
                           "as the search's)")
        if (s["c_in"], s["c_out"]) != (slot.c_in, slot.c_out):
            raise BadInput(f"latency table was measured for {slot.name} with {s['c_in']}->{s['c_out']} channels, "
                           f"the search has {slot.c_in}->{slot.c_out} (build it with bench bitops --channels/--blocks "
                           "as the search's)")
        row = [[layers_ms(table, [(slot.name, op, b, b)], backend) for b in bits] for op in ops]
        costs.append(torch.tensor(row, dtype=torch.float64))
    return costs


def load(path: str | Path) -> dict:
    """A saved table, checked enough that a wrong file is a clear error."""
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: cannot read a latency table ({e})") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise BadInput(f"{path}: not a qnas-deploy latency table")
    return table
