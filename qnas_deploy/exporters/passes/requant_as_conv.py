"""``requant`` between two quantized grids -> an identity depthwise 1x1 ``conv``.

Weight 1 at scale 1, no bias: the runtime then requantises as it does after every other
conv, which is what the reference computes. Why not the runtimes' own requantise:
onnxruntime merges a DequantizeLinear -> QuantizeLinear pair right after another Q -> DQ
(DoubleQDQPairsRemover), dropping a rounding the trained model performs; LiteRT's
XNNPACK rounds int8 -> int8 QUANTIZE with an 8-bit fixed-point multiplier.
A requant into or out of a float tensor is a plain (de)quantisation and stays.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from . import Pass, Property, quantized_io


def identity_conv(channels: int) -> ir.Conv:
    return ir.Conv(weight=np.ones((channels, 1, 1, 1), np.int8), w_scale=np.ones(channels, np.float32), bias=None,
                   w_bits=8, stride=1, pad=(0, 0), dilation=1, groups=channels, kernel=(1, 1))


def run(graph: ir.Graph, options=None) -> ir.Graph:
    nodes = []
    for n in graph.nodes:
        if n.op == "requant" and quantized_io(graph, n):
            n = ir.Node("conv", n.inputs, n.output, identity_conv(graph.tensor(n.inputs[0]).channels), n.name)
        nodes.append(n)
    return graph.with_nodes(nodes)


NO_INTEGER_REQUANT = Property(
    "no requant between two quantized grids",
    lambda g: [n.name for n in g.nodes if n.op == "requant" and quantized_io(g, n)])

PASS = Pass("requant_as_conv", run, ensures=(NO_INTEGER_REQUANT,))
