"""onnxruntime's CPU provider on x86: the exact arithmetic, but for QLinearAdd.

The identity requantisations of the ONNX file are convs in the target-lowered graph
(``passes/requant_as_conv.py``), which ``exact.conv`` already computes as QLinearConv does.
"""
from __future__ import annotations

import numpy as np

from ..ir import check_dispatch
from . import exact

F32 = np.float32


def qlinear_add_ort(a: np.ndarray, sa: float, za: int, b: np.ndarray, sb: float, zb: int,
                    sc: float, zc: int) -> np.ndarray:
    """onnxruntime's uint8 QLinearAdd on x86 (MLAS ``qladd_avx2.cpp``).

    In float32: ``fixed = zc - (ra * za + rb * zb)`` with ``ra = sa / sc``, then two
    fused multiply-adds on the raw uint8 values, ``a * ra + (b * rb + fixed)``, each
    rounded once, and ``cvtps`` rounding half to even. It differs from float addition of
    the dequantized values only near ties. ``fma`` is computed in float64 and rounded to
    float32: the products of an 8-bit integer and a float32 are exact in float64.
    """
    ra, rb = F32(F32(sa) / F32(sc)), F32(F32(sb) / F32(sc))
    fixed = F32(F32(zc) - F32(F32(ra * F32(za)) + F32(rb * F32(zb))))
    t = (b.astype(np.float64) * np.float64(rb) + np.float64(fixed)).astype(F32)
    c = (a.astype(np.float64) * np.float64(ra) + t.astype(np.float64)).astype(F32)
    return np.clip(np.rint(c), 0, 255).astype(np.int32)


def add(graph, node, values):
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if (ta.quantized and tb.quantized and tc.quantized and node.attrs.mult == 1.0
            and tc.qmin == 0 and tc.qmax == 255):
        return qlinear_add_ort(values[node.inputs[0]], ta.scale, ta.zero_point, values[node.inputs[1]],
                               tb.scale, tb.zero_point, tc.scale, tc.zero_point)
    return exact.KERNELS["add"](graph, node, values)


KERNELS = {**exact.KERNELS, "add": add}
check_dispatch(KERNELS, "onnxruntime arithmetic")
