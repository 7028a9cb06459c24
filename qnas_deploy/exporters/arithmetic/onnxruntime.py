"""onnxruntime's CPU provider (MLAS), on x86 and aarch64 alike: the exact arithmetic.

The file is written so that no kernel whose rounding depends on the CPU runs: identity
requantisations are convs (``passes/requant_as_conv.py``), QLinearConv requantises in
float32 with ties to even everywhere, and quantized adds are float ``Sum`` between
DequantizeLinear and QuantizeLinear (``onnx.py``), not QLinearAdd, whose x86 kernel rounds
in fused multiply-adds and whose aarch64 kernel in fixed point. A quantized mul without a
constant factor runs QLinearMul, the same float32 formula on every CPU but not the model's
(calibration checks it on every input pair, ``add_scales``); one with a factor (ESA's) is a
float island, the model's arithmetic.
"""
from __future__ import annotations

import numpy as np

from ..ir import check_dispatch
from . import exact

F32 = np.float32


def mul(graph, node, values):
    """A quantized mul without a factor: DequantizeLinear, Mul, QuantizeLinear fuse into
    QLinearMul, whose MLAS kernel (SSE2 and NEON alike, ``qlmul.cpp``) multiplies the integer
    product by one float32 ratio, adds the output zero point in float32 and rounds half to
    even: not the float model's products. With a factor the file keeps a float Mul of its
    own (``onnx.py``), which no fusion takes: the model's arithmetic."""
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized) or node.attrs.mult != 1.0:
        return exact.KERNELS["mul"](graph, node, values)
    ratio = F32(F32(F32(ta.scale) * F32(tb.scale)) / F32(tc.scale))
    prod = (values[node.inputs[0]].astype(np.int64) - ta.zero_point) * (values[node.inputs[1]].astype(np.int64)
                                                                         - tb.zero_point)
    v = (prod.astype(F32) * ratio).astype(F32) + F32(tc.zero_point)
    return np.clip(np.rint(v.astype(F32)).astype(np.int64), tc.qmin, tc.qmax).astype(np.int32)


KERNELS = {**exact.KERNELS, "mul": mul}
check_dispatch(KERNELS, "onnxruntime arithmetic")
