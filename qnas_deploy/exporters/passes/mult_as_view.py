"""A constant factor on a quantized ``mul`` -> the declared scale of its second input.

``reinterpret`` gives the same int8 values a grid ``mult`` times coarser, and the mul
then carries no factor. For int8 TFLite: LOGISTIC's output scale is fixed at 1/256, so
the factor cannot go onto the mask's grid, and MUL has no constant factor of its own.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from . import Pass, Property

F32 = np.float32


def view_scale(scale: float, mult: float) -> float:
    return float(F32(F32(scale) * F32(mult)))


def _quantized(graph, n) -> bool:
    return all(graph.tensor(t).quantized for t in (*n.inputs, n.output))


def run(graph: ir.Graph, options=None) -> ir.Graph:
    tensors, nodes = dict(graph.tensors), []
    for n in graph.nodes:
        if n.op == "mul" and n.attrs.mult != 1.0 and _quantized(graph, n):
            a, b = n.inputs
            bt = graph.tensor(b)
            view = ir.Tensor(f"{b}.x{n.attrs.mult:.6g}", bt.channels, view_scale(bt.scale, n.attrs.mult),
                             bt.zero_point, bt.qmin, bt.qmax)
            tensors[view.name] = view
            nodes.append(ir.Node("reinterpret", [b], view.name, ir.Reinterpret(), view.name))
            n = ir.Node("mul", [a, view.name], n.output, n.attrs.replace(mult=1.0), n.name)
        nodes.append(n)
    return graph.with_nodes(nodes, tensors)


NO_QUANTIZED_MULT = Property(
    "no quantized mul carries a constant factor",
    lambda g: [n.name for n in g.nodes if n.op == "mul" and n.attrs.mult != 1.0 and _quantized(g, n)])

PASS = Pass("mult_as_view", run, ensures=(NO_QUANTIZED_MULT,))
