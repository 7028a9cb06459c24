"""Widen every int8 filter: per output channel, multiply the integer weights and bias by
the largest power of two ``2^k`` that keeps the weights in [-127, 127] (and the bias in
int32), and divide the weight scale by it.

Every product ``q * s`` is unchanged, and so is a float32 requantisation (XNNPACK's,
onnxruntime's: scaling by a power of two is exact). LiteRT's builtin kernels gain: they
requantise in two roundings (``SaturatingRoundingDoublingHighMul``, then
``RoundingDivideByPOT``), and a multiplier near 1 leaves the first rounding only a bit or
two above the final one, so that about a quarter of the outputs of a 4-bit conv (or of an
identity requantisation) land one step off the trained value. ``2^k`` more bits of first
rounding make that ``2^k`` times rarer. Packed INT4 filters stay as they are.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from . import Pass, Property, quantized_io


def widen(weight: np.ndarray, w_scale: np.ndarray, bias: np.ndarray):
    """``(weight, w_scale, bias)`` widened per channel (see the module docstring)."""
    o = len(weight)
    peak = np.abs(weight.reshape(o, -1).astype(np.int64)).max(axis=1)
    k = np.zeros(o, np.int64)
    nz = peak > 0
    k[nz] = np.maximum(np.floor(np.log2(127.0 / peak[nz])), 0).astype(np.int64)  # -128 stays as it is
    big = np.abs(bias.astype(np.int64))
    over = (big << k > 2**31 - 1) & (k > 0)
    while over.any():  # a bias already at the int32 limit keeps k = 0
        k = np.where(over, k - 1, k)
        over = (big << k > 2**31 - 1) & (k > 0)
    f = np.int64(1) << k
    w = (weight.astype(np.int64) * f.reshape((o,) + (1,) * (weight.ndim - 1))).astype(np.int8)
    return w, (w_scale.astype(np.float32) / f.astype(np.float32)).astype(np.float32), \
        (bias.astype(np.int64) * f).astype(np.int32)


def _widenable(graph, n) -> bool:
    return n.op == "conv" and n.attrs.storage == "int8" and quantized_io(graph, n)


def run(graph: ir.Graph, options=None) -> ir.Graph:
    nodes = []
    for n in graph.nodes:
        if _widenable(graph, n):
            a = n.attrs
            w, s, b = widen(a.weight, a.w_scale, a.bias_or_zeros())
            n = ir.Node(n.op, n.inputs, n.output, a.replace(weight=w, w_scale=s, bias=b), n.name)
        nodes.append(n)
    return graph.with_nodes(nodes)


def _narrow(g: ir.Graph) -> list[str]:
    out = []
    for n in g.nodes:
        if _widenable(g, n):
            w, _, _ = widen(n.attrs.weight, n.attrs.w_scale, n.attrs.bias_or_zeros())
            if not np.array_equal(w, n.attrs.weight):
                out.append(n.name)
    return out


WIDENED = Property("every int8 filter is widened", _narrow)

PASS = Pass("widen", run, ensures=(WIDENED,))
