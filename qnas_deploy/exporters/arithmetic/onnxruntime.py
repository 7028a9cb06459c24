"""onnxruntime's CPU provider (MLAS), on x86 and aarch64 alike: the exact arithmetic.

The file is written so that no kernel whose rounding depends on the CPU runs: identity
requantisations are convs (``passes/requant_as_conv.py``), QLinearConv requantises in
float32 with ties to even everywhere, and quantized adds are float ``Sum`` between
DequantizeLinear and QuantizeLinear (``onnx.py``), not QLinearAdd, whose x86 kernel rounds
in fused multiply-adds and whose aarch64 kernel in fixed point.
"""
from __future__ import annotations

from ..ir import check_dispatch
from . import exact

KERNELS = dict(exact.KERNELS)
check_dispatch(KERNELS, "onnxruntime arithmetic")
