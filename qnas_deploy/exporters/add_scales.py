"""Tensor scales chosen so that every runtime's int8 ADD equals the exact one on every input.

The trained model (and onnxruntime, whose quantized adds are float ``Sum`` islands) adds
two int8 tensors exactly: ``rint((s_a (a - z_a) + s_b (b - z_b)) / s_c)`` in float32.
XNNPACK's ADD does not: it turns the scale ratios ``s_a / s_c`` and ``s_b / s_c`` into
integers with 20 significant bits and one shared shift (``arithmetic.litert.add_xnnpack``),
so an input pair whose exact sum lies within about ``255 * 2^-20`` steps of a rounding
boundary rounds the other way. For a typical add that is 0 to 5 of the 65536 possible
input pairs, and a network only has to meet one of them in an image: RFDN's trained
``block.3.out`` met it on 0.01% of its values, and ESA's sigmoid mask spread it to
0.065 dB.

An add has only 65536 input pairs, so the fix is checked, not hoped for: after
calibration, each quantized add whose output scale is free gets the nearest scale (a few
parts per million away) at which every kernel in :data:`KERNELS` equals the exact
arithmetic on all pairs; an add that writes a fixed grid (the network's output, 1/255)
moves one of its conv-written inputs instead. The model holds the moved scale, so PyTorch,
the numpy reference and every runtime compute the same new grid; the accuracy cost is
nil (the grid moves by ``2^-21`` of a step per step of the search).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from .arithmetic import exact, litert
from . import ir
from .ir import Graph, Node, Tensor

# The int8 ADD kernels of the runtimes that do not add exactly. LiteRT's builtin kernels are
# here as a guard: with 31-bit multipliers they have matched the exact add on every pair
# of every add measured so far, but nothing in their arithmetic promises it.
KERNELS = {"litert-xnnpack": litert.add_xnnpack,
           "litert-builtin (SIMD)": partial(litert.add, simd_lanes=1),
           "litert-builtin (scalar)": partial(litert.add, simd_lanes=None)}

# Relative step of the scale search and how far it may go (2^-21 moves XNNPACK's 20-bit
# ratio by about one unit; 4096 steps is 0.2% of the scale).
STEP, MAX_STEPS = 2.0 ** -21, 4096


@dataclass
class SnappedAdd:
    add: str                 # the add node's output tensor
    tensor: str              # the tensor whose scale moved
    old_scale: float
    new_scale: float
    mismatches: dict         # kernel -> input pairs that differed before


def mismatches(ta: Tensor, tb: Tensor, tc: Tensor) -> dict[str, int]:
    """Per kernel of :data:`KERNELS`, the input pairs ``(a, b)`` (all of them) on which it
    differs from the exact add ``a + b`` onto ``tc``."""
    qa, qb = np.meshgrid(np.arange(ta.qmin, ta.qmax + 1), np.arange(tb.qmin, tb.qmax + 1), indexing="ij")
    g = Graph({t.name: t for t in (ta, tb, tc)}, [], ta.name, tc.name, 1)
    node = Node("add", [ta.name, tb.name], tc.name, ir.Add())
    values = {ta.name: qa[None, None], tb.name: qb[None, None]}
    want = exact.KERNELS["add"](g, node, values)
    return {name: int(np.count_nonzero(k(g, node, values) != want)) for name, k in KERNELS.items()}


def quantized_add(graph: Graph, n: Node) -> bool:
    return n.op == "add" and n.attrs.mult == 1.0 and len(n.inputs) == 2 and \
        all(graph.tensor(t).quantized for t in (*n.inputs, n.output))


def _mismatches_of(graph: Graph, n: Node) -> dict[str, int]:
    """:func:`mismatches` of add ``n``, only the kernels that differ."""
    return {k: v for k, v in mismatches(*(graph.tensor(t) for t in (*n.inputs, n.output))).items() if v}


def inexact(graph: Graph) -> dict[str, dict[str, int]]:
    """The quantized adds of ``graph`` that some kernel rounds otherwise on some input pair:
    add -> :func:`mismatches` (only the nonzero ones)."""
    return {n.output: bad for n in graph.nodes if quantized_add(graph, n) and (bad := _mismatches_of(graph, n))}


def snap(model) -> list[SnappedAdd]:
    """Move scales of ``model`` (calibrated, lowerable) until every quantized add of its
    canonical graph is exact in every kernel of :data:`KERNELS`; returns what moved.

    Adds are fixed in graph order, each seeing the scales moved before it (the tensors a moved
    quantizer holds are updated in the graph); the model is then lowered again and checked,
    since a tensor copied from a moved one (``GraphBuilder.like``) only changes there. An add
    no scale can fix (no free quantizer, or moved once and undone since) is left to the
    export's hint."""
    from .builder import lower_model

    done, moved = set(), []
    while True:
        holders: dict = {}
        graph = lower_model(model, holders=holders)
        moved_now = False
        for n in graph.nodes:
            if not quantized_add(graph, n) or n.output in done or not (bad := _mismatches_of(graph, n)):
                continue
            done.add(n.output)
            fixed = _fix(graph, holders, n)
            if fixed is not None:
                name, old, new = fixed
                moved.append(SnappedAdd(n.output, name, old, new, bad))
                moved_now = True
                for t, q in holders.items():
                    if q is holders[name]:
                        graph.tensor(t).scale = new
        if not moved_now:
            return moved


def _fix(graph: Graph, holders: dict, n: Node):
    """Find a scale for ``n``'s output (or, if that grid is fixed, for an input a conv
    writes) at which the add is exact in every kernel; set it on the quantizer."""
    names = [n.output] + [t for t in n.inputs if (p := graph.producer(t)) is not None and p.op == "conv"]
    ts = {t: graph.tensor(t) for t in (*n.inputs, n.output)}
    for name in names:
        q = holders.get(name)
        if q is None or q.fixed_scale is not None:
            continue
        for absmax in _candidates(q.absmax.detach()):
            scale = float(q.scale_for(absmax))
            trial = {t: (Tensor(v.name, v.channels, scale, v.zero_point, v.qmin, v.qmax) if t == name else v)
                     for t, v in ts.items()}
            if not any(mismatches(trial[n.inputs[0]], trial[n.inputs[1]], trial[n.output]).values()):
                with torch.no_grad():
                    q.absmax.copy_(absmax)
                return name, ts[name].scale, scale
    return None


def _candidates(absmax: torch.Tensor):
    """Ranges near ``absmax``, nearest first, in steps of :data:`STEP` of it."""
    for k in range(1, MAX_STEPS + 1):
        for sign in (1, -1):
            yield (absmax.double() * (1 + sign * k * STEP)).float()
