"""``tile`` -> a 1x1 ``conv`` with one-hot weights at scale 1.0: exact, and a kernel every
int8 runtime has (TFLite's TILE is not delegated to XNNPACK)."""
from __future__ import annotations

import numpy as np

from .. import ir
from . import Pass, Property


def one_hot(channels: int, times: int) -> np.ndarray:
    w = np.zeros((channels * times, channels, 1, 1), np.float32)
    w[np.arange(channels * times), np.tile(np.arange(channels), times)] = 1
    return w


def run(graph: ir.Graph, options=None) -> ir.Graph:
    nodes = []
    for n in graph.nodes:
        if n.op == "tile":
            c, times = graph.tensor(n.inputs[0]).channels, n.attrs.times
            geometry = dict(stride=1, pad=(0, 0), dilation=1, groups=1, kernel=(1, 1))
            w = one_hot(c, times)
            if graph.tensor(n.inputs[0]).quantized:
                attrs = ir.Conv(weight=w.astype(np.int8), w_scale=np.ones(c * times, np.float32),
                                bias=np.zeros(c * times, np.int32), w_bits=8, **geometry)
                n = ir.Node("conv", n.inputs, n.output, attrs, n.name)
            else:
                n = ir.Node("float_conv", n.inputs, n.output,
                            ir.FloatConv(weight=w, bias=np.zeros(c * times, np.float32), **geometry), n.name)
        nodes.append(n)
    return graph.with_nodes(nodes)


NO_TILE = Property("no tile", lambda g: [n.name for n in g.nodes if n.op == "tile"])

PASS = Pass("tile_as_conv", run, ensures=(NO_TILE,))
