"""Building an FBNet-style per-layer latency table: what each searchable layer costs on a backend.

Every candidate of a space's searchable layers (operation x weight bits x activation bits
at the channels and input size its slot has) is lowered on its own, exactly as the
exporter lowers it inside a network (the requantisation onto its activation grid, its
convs, the requantisation of its result), serialized for the backend and timed alone.
What the layers do not cover (the fixed ops: additions, depth-to-space, RFDN's ESA and
concatenations, the runtime's per-call overhead) is one constant per backend, the median
of ``measured - sum(layers)`` over a few calibration architectures that are not among the
ones the table is judged on.

This module measures; the table's format and what a search or a benchmark reads from it
(predictions, the constant part's fit, search costs) are the cost model, :mod:`qnas_deploy.cost.latency`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..cost.latency import FORMAT, VERSION, key
from ..runtimes import RUNTIMES
from ..runtimes.timing import Job, round_robin

BACKENDS = ("onnxruntime", "litert-xnnpack")   # RUNTIMES names: what the table times


def slot_sizes(space: str, size: tuple[int, int], channels: int | None = None,
               blocks: int | None = None) -> dict[str, tuple[int, int, int, int]]:
    """``slot name -> (c_in, c_out, height, width)`` of each searchable layer's input when
    the network's LR input is ``size`` (channels at the space's fixed widths), read from
    forward hooks on a small model."""
    import torch

    from ..infer import min_input_size
    from ..spaces import build_model, get_space
    from ..spec import ArchSpec, LayerSpec

    sp = get_space(space)
    channels, blocks = channels or sp.default_channels, blocks or sp.default_blocks
    slots = sp.layout(channels, blocks, 4)
    spec = ArchSpec(space=space, scale=4, channels=channels, blocks=blocks, adq=sp.has_adq,
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
    from ..exporters.builder import GraphBuilder
    from ..exporters.ir import Tensor

    g = GraphBuilder()
    grid = float(np.float32(1 / 255))
    x = g.add_tensor(Tensor(f"{name}.x", c_in, grid, 0, 0, 255))
    out = g.add_tensor(Tensor(f"{name}.y", c_out, grid, 0, 0, 255))
    return g.graph(x.name, g.chain(list(layer), x.name, out, name), 1)


def _candidates(space: str, bits, channels: int | None = None, blocks: int | None = None, widths=()) -> list:
    """Specs that together hold every (slot, operation, bits, input and output channels)
    candidate at least once: per operation index and bits, one spec per pair ``(a, b)``
    of ``widths`` with the free layers' widths alternating ``a, b, a, ...`` (consecutive
    free layers, as in the mobile space, then meet every pair). Specs that add no new
    candidate are dropped by the caller. ``widths`` must pass ``Space.width_problem``."""
    from ..spaces import get_space
    from ..spec import ArchSpec, LayerSpec

    sp = get_space(space)
    channels, blocks = channels or sp.default_channels, blocks or sp.default_blocks
    slots = sp.layout(channels, blocks, 4)
    n_ops = max(len(sp.ops_for(s.role, "small")) for s in slots)
    free = [s.name for s in slots if s.free_width]
    pairs = [(a, b) for a in widths for b in widths] if widths and free else [(None, None)]
    specs = []
    for i in range(n_ops):
        for b in bits:
            for a, c in pairs:
                w = {n: (a, c)[k % 2] for k, n in enumerate(free)} if a is not None else {}
                layers = tuple(LayerSpec(s.name, sp.ops_for(s.role, "small")[i % len(sp.ops_for(s.role, "small"))],
                                         b, b, w.get(s.name)) for s in slots)
                specs.append(ArchSpec(space=space, scale=4, channels=channels, blocks=blocks, layers=layers,
                                      adq=sp.has_adq, name=f"{space}_table_{i}_{b}_{a}_{c}"))
    return specs


def build_table(space: str, size: tuple[int, int], bits=(2, 4, 8), threads: int = 1, runs: int = 10,
                warmup: int = 2, backends=BACKENDS, work: str | Path | None = None, progress: bool = True,
                channels: int | None = None, blocks: int | None = None, widths=()) -> dict:
    """Measure every layer candidate of ``space`` alone on each backend (``fixed_ms`` not yet
    set); with ``widths``, at every channel pair those widths give each free layer and its reader."""
    import torch
    from tqdm import tqdm

    from ..errors import BadInput
    from ..exporters.export import ExportOptions, compile_graph, prepare
    from ..spaces import get_space

    sp = get_space(space)
    widths = tuple(widths or ())
    why = sp.width_problem(widths, channels, blocks)
    if why:
        raise BadInput(f"--widths: {why}")
    work = Path(work or tempfile.mkdtemp(prefix="qnas-table-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = slot_sizes(space, size, channels, blocks)
    entries: dict[str, dict] = {}
    files: list[tuple[str, Path, Path, tuple[int, int, int, int]]] = []
    for spec in tqdm(_candidates(space, bits, channels, blocks, widths), desc=f"table {space}: lower",
                     disable=not progress, leave=False):
        slots = sp.slots_of(spec)
        wanted = {l.name: key(l.op, l.w_bits, l.a_bits, s.c_in, s.c_out, *sizes[l.name][2:])
                  for l, s in zip(spec.layers, slots)}
        if all(k in entries for k in wanted.values()):
            continue  # adds no candidate: not worth preparing
        model = prepare(spec, log=lambda _: None).model
        for layer, slot in zip(spec.layers, slots):
            c_in, c_out, (h, w) = slot.c_in, slot.c_out, sizes[layer.name][2:]
            k = wanted[layer.name]
            if k in entries:
                continue
            entries[k] = {"op": layer.op, "w_bits": layer.w_bits, "a_bits": layer.a_bits, "c_in": c_in,
                          "c_out": c_out, "height": h, "width": w}
            with torch.no_grad():
                graph = layer_graph(model.layers[layer.name.replace(".", "_")], c_in, c_out, layer.name)
            stem = work / f"layer_{len(files)}"
            # Written as every export is (target passes, the runtime's loader as checker), unsimplified
            # as the layer is already minimal.
            for fmt, io in (("onnx", "uint8"), ("tflite", "int8")):
                opts = ExportOptions(format=fmt, io=io, input_size=(h, w), simplify=False)
                stem.with_suffix(f".{fmt}").write_bytes(compile_graph(graph, opts)[1])
            files.append((k, stem.with_suffix(".onnx"), stem.with_suffix(".tflite"), (c_in, c_out, h, w)))
    for backend in tqdm(backends, desc=f"table {space}: time", disable=not progress, leave=False):
        rt = RUNTIMES[backend]
        jobs = [Job(str(onnx_p if rt.suffix == ".onnx" else tfl_p), backend, rt.input_shape(h, w, c))
                for _, onnx_p, tfl_p, (c, _, h, w) in files]
        rounds = round_robin(jobs, threads, runs, warmup, progress and f"table {space}: {backend} rounds")
        for (k, *_), t in zip(files, rounds.timings):
            entries[k][f"{backend}_ms"] = t.median_ms
    free = {s.name for s in sp.layout(spec.channels, spec.blocks, 4) if s.free_width}
    return {"format": FORMAT, "version": VERSION, "space": space, "channels": spec.channels, "blocks": spec.blocks,
            "lr_size": f"{size[0]}x{size[1]}", "threads": threads,
            "runs": runs, "bits": list(bits), "widths": list(widths), "backends": list(backends),
            "slots": {n: {"c_in": v[0], "c_out": v[1], "height": v[2], "width": v[3],
                          "free_width": bool(widths) and n in free} for n, v in sizes.items()},
            "fixed_ms": {b: None for b in backends}, "entries": entries}
