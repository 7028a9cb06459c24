"""Each int8 conv whose adjacent input channels could overflow a 16-bit pair sum reads its
input twice, every real weight paired with a zero (OpenVINO target).

On x86 CPUs without VNNI (AVX2 only, e.g. AMD Zen 2/3), OpenVINO's int8 convolutions
multiply uint8 activations by int8 weights with VPMADDUBSW, which adds the products of
input channels ``2k`` and ``2k+1`` (at the same tap) into an int16 with saturation (oneDNN
does not compensate): ``255 * (|w_2k| + |w_2k+1|)`` passes 32767 once the two weights
sum past 128, and a 3x3 conv of 8 such pairs at 255 came out 64 instead of 126.5 steps.
With VNNI or AMX the products go into int32 and nothing saturates.

The file has to be exact on both, so a conv at risk reads ``tile(x, 2)`` (channels
``x_0 .. x_C-1, x_0 .. x_C-1``, a uint8 copy) with source channel ``s``'s weights at
position ``s`` when ``s`` is even and ``C + s`` when odd: every pair then holds at most one
nonzero weight (for odd ``C`` too), the sum is the same integers, and no pair can
saturate. It doubles that conv's multiply-adds in OpenVINO. Depthwise convs (32-bit
products) stay; grouped ones at risk become dense first.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from ..ir import Tensor
from . import Pass, Property
from .dense import dense

PAIR_LIMIT = 128  # 255 * 128 = 32640 <= 32767


def pair_overflows(weight: np.ndarray) -> bool:
    """Some output channel and tap whose input channels ``2k, 2k+1`` sum past the limit."""
    w = np.abs(weight.astype(np.int32))
    if w.shape[1] % 2:
        w = np.concatenate([w, np.zeros_like(w[:, :1])], axis=1)
    return bool((w[:, 0::2] + w[:, 1::2] > PAIR_LIMIT).any())


def _at_risk(graph: ir.Graph, n: ir.Node) -> bool:
    return (n.op == "conv" and n.attrs.storage == "int8"
            and not n.attrs.depthwise(graph.tensor(n.inputs[0]).channels) and pair_overflows(n.attrs.weight))


def spread(weight: np.ndarray) -> np.ndarray:
    """``weight`` [O, C, kh, kw] for the input ``tile(x, 2)``: channel ``s`` at ``s`` (even)
    or ``C + s`` (odd), zeros elsewhere."""
    o, c = weight.shape[:2]
    out = np.zeros((o, 2 * c, *weight.shape[2:]), weight.dtype)
    s = np.arange(c)
    out[:, np.where(s % 2 == 0, s, c + s)] = weight
    return out


def run(graph: ir.Graph, options=None) -> ir.Graph:
    tensors, nodes = dict(graph.tensors), []
    for n in graph.nodes:
        if _at_risk(graph, n):
            x = tensors[n.inputs[0]]
            twice = f"{x.name}.twice"
            if twice not in tensors:
                tensors[twice] = Tensor(twice, 2 * x.channels, x.scale, x.zero_point, x.qmin, x.qmax)
                nodes.append(ir.Node("tile", [x.name], twice, ir.Tile(times=2), f"{n.name}.twice"))
            a = dense(n.attrs)
            n = ir.Node("conv", [twice], n.output, a.replace(weight=spread(a.weight)), n.name)
        nodes.append(n)
    return graph.with_nodes(nodes, tensors)


NO_PAIR_OVERFLOW = Property(
    f"no int8 conv (but depthwise) has two adjacent input channels whose weights sum past {PAIR_LIMIT}",
    lambda g: [n.name for n in g.nodes if _at_risk(g, n)])

PASS = Pass("pair_safe", run, ensures=(NO_PAIR_OVERFLOW,))
