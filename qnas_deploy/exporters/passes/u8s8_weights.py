"""Weights past +-64 stored as uint8 with zero point 128, where onnxruntime's x86 uint8 x
int8 GEMM could saturate.

Without AVX-VNNI, MLAS multiplies uint8 activations by int8 weights with VPMADDUBSW,
which adds pairs of products into int16 with saturation: ``255 * (|w1| + |w2|)`` may
exceed 32767 once a weight passes 64 in magnitude. Such a conv takes MLAS's exact uint8 x
uint8 kernel instead. Depthwise convs run a kernel with 32-bit products and stay. Grouped
ones become one dense conv with block-diagonal weights: on a trained checkpoint the
grouped QLinearConv with uint8 weights still differed from the exact result (4 outputs
in 10^5) and the dense conv did not; a hand-built case did not reproduce it, so the dense
form is kept as the known-exact one.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from . import Pass, Property
from .dense import dense

LIMIT = 64


def may_saturate(weight: np.ndarray, groups: int) -> bool:
    depthwise = groups > 1 and weight.shape[1] == 1 and weight.shape[0] == groups
    return not depthwise and int(np.abs(weight.astype(np.int16)).max()) > LIMIT


def _at_risk(n) -> bool:
    return n.op == "conv" and n.attrs.storage == "int8" and may_saturate(n.attrs.weight, n.attrs.groups)


def run(graph: ir.Graph, options=None) -> ir.Graph:
    return graph.with_nodes([ir.Node(n.op, n.inputs, n.output, dense(n.attrs).replace(storage="uint8"), n.name)
                             if _at_risk(n) else n for n in graph.nodes])


NO_SATURATING_INT8 = Property(f"no int8-stored conv (but depthwise) has a weight past +-{LIMIT}",
                              lambda g: [n.name for n in g.nodes if _at_risk(n)])

PASS = Pass("u8s8_weights", run, ensures=(NO_SATURATING_INT8,))
