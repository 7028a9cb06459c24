"""The exact arithmetic: what the fake-quant PyTorch model computes (the canonical graph's meaning).

Quantized convolutions run in integers: ``acc = sum (q - zp_in) * w + bias`` in int64
(never overflowing int32 for these sizes), then the requantisation onnxruntime's
QLinearConv performs and the model reproduces (``quant.functional.requantize``):
``clip(rint(float32(acc) * M) + zp_out)`` with the float32 multiplier
``M = s_in * s_w[c] / s_out`` (FACTS.md section 5), rounding half to even.
Elementwise operations compute the real values in float32 from their integer inputs
and quantize the result with ``rint(v / s_out)``, exactly as the fake-quant model does.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Tensor, check_dispatch

F32 = np.float32


def to_input(t: Tensor, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise ValueError("the reference executor takes uint8 images")
    if t.quantized:  # the input grid is 1/255 with zero point 0: uint8 pixels are its integers
        return x.astype(np.int32)
    return x.astype(F32) / F32(255.0)


def to_uint8(t: Tensor, v: np.ndarray) -> np.ndarray:
    if t.quantized:
        return np.clip(v, 0, 255).astype(np.uint8)
    return np.clip(np.rint(v * F32(255.0)), 0, 255).astype(np.uint8)


def real(t: Tensor, v: np.ndarray) -> np.ndarray:
    """Real values of a tensor, in float32 (dequantization)."""
    if not t.quantized:
        return v.astype(F32)
    return (v - t.zero_point).astype(F32) * F32(t.scale)


def quantize(t: Tensor, v: np.ndarray) -> np.ndarray:
    """Real float32 values onto the grid of ``t`` (``rint(v / s) + zp``, clipped)."""
    if not t.quantized:
        return v.astype(F32)
    q = np.rint(v.astype(F32) / F32(t.scale)).astype(np.int64) + t.zero_point
    return np.clip(q, t.qmin, t.qmax).astype(np.int32)


def conv_int(x: np.ndarray, w: np.ndarray, stride: int, pad, dilation: int, groups: int) -> np.ndarray:
    """Integer (or float) 2-D convolution by im2col, NCHW; zero padding."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ph, pw = pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pw - dilation * (kw - 1) - 1) // stride + 1
    og = o // groups
    integer = np.issubdtype(x.dtype, np.integer)
    # Integer convs accumulate in float64, which BLAS multiplies (numpy's int64 einsum does
    # not): every product and partial sum is an integer below 2^53, so the result is exact.
    exact_in_f64 = integer and (float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0))
                                * cg * kh * kw < 2.0 ** 53)
    # Float convs accumulate in float64 too and round to float32 once: every float32 product
    # is exact there, so the sum does not depend on the conv's form (grouped or dense) or on
    # the order the BLAS of this machine chose.
    acc_dtype = np.float64 if exact_in_f64 or not integer else np.int64
    out = np.zeros((n, o, ho, wo), dtype=acc_dtype)
    if cg == 1 and exact_in_f64:  # depthwise integer conv: one exact broadcast product per tap, not a loop
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, :, i * dilation: i * dilation + stride * (ho - 1) + 1: stride,
                           j * dilation: j * dilation + stride * (wo - 1) + 1: stride].astype(acc_dtype)
                out += (patch if og == 1 else np.repeat(patch, og, axis=1)) * \
                    w[:, 0, i, j].astype(acc_dtype).reshape(1, o, 1, 1)
        return out.astype(np.int64) if exact_in_f64 else out
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * og:(g + 1) * og].astype(acc_dtype)
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dilation: i * dilation + stride * (ho - 1) + 1: stride,
                           j * dilation: j * dilation + stride * (wo - 1) + 1: stride].astype(acc_dtype)
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j], optimize=True)
    return out.astype(np.int64) if exact_in_f64 else (out if integer else out.astype(np.float32))


def float_conv(graph: Graph, node: Node, values: dict) -> np.ndarray:
    a = node.attrs
    xr = real(graph.tensor(node.inputs[0]), values[node.inputs[0]])
    if a.relu_in:
        xr = np.maximum(xr, 0)
    y = conv_int(xr, a.weight, a.stride, a.pad, a.dilation, a.groups)
    y = y + a.bias.reshape(1, -1, 1, 1).astype(F32)
    return quantize(graph.tensor(node.output), y.astype(F32) * F32(a.mult) if a.mult != 1.0 else y.astype(F32))


def accumulate(graph: Graph, node: Node, values: dict) -> np.ndarray:
    """A conv's int64 accumulator ``sum (q - zp_in) * w + bias`` (whatever the storage:
    uint8 weights with zero point 128 and packed INT4 hold the same integers)."""
    a = node.attrs
    xt = graph.tensor(node.inputs[0])
    acc = conv_int(values[node.inputs[0]].astype(np.int64) - xt.zero_point, a.weight, a.stride, a.pad, a.dilation,
                   a.groups)
    return acc + a.bias_or_zeros().astype(np.int64).reshape(1, -1, 1, 1)


def conv(graph: Graph, node: Node, values: dict) -> np.ndarray:
    """Requantised as onnxruntime's QLinearConv: ``rint(f32(acc) * M)``, one rounding."""
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    acc = accumulate(graph, node, values)
    w_scale = node.attrs.scaled_w_scale()
    if not yt.quantized:  # into a float layer
        return acc.astype(F32) * (F32(xt.scale) * w_scale).reshape(1, -1, 1, 1)
    return requantize_conv(acc, xt, yt, node.attrs)


def requantize_conv(acc: np.ndarray, xt, yt, attrs) -> np.ndarray:
    """A conv's accumulator (bias included, ``[N, C, H, W]`` integers) onto ``yt``:
    ``rint(f32(acc) * M)``, ``M = f32(f32(s_in s_w) / s_out)`` per channel."""
    m = ((F32(xt.scale) * attrs.scaled_w_scale()) / F32(yt.scale)).astype(F32)
    q = np.rint(acc.astype(F32) * m.reshape(1, -1, 1, 1)).astype(np.int64)
    return np.clip(q + yt.zero_point, yt.qmin, yt.qmax).astype(np.int32)


def _elementwise(fn):
    def op(graph: Graph, node: Node, values: dict) -> np.ndarray:
        ins = [real(graph.tensor(i), values[i]) for i in node.inputs]
        v = fn(*ins).astype(F32)
        mult = node.attrs.mult
        if mult != 1.0:
            v = (v * F32(mult)).astype(F32)
        return quantize(graph.tensor(node.output), v)
    return op


def requant(graph, node, values):
    return quantize(graph.tensor(node.output), real(graph.tensor(node.inputs[0]), values[node.inputs[0]]))


def concat(graph, node, values):
    yt = graph.tensor(node.output)
    parts = []
    for i in node.inputs:
        t, v = graph.tensor(i), values[i]
        parts.append(v if t.quantized and t.same_grid(yt) else quantize(yt, real(t, v)))
    return np.concatenate(parts, axis=1)


def depth_to_space(graph, node, values):
    v = values[node.inputs[0]]
    r = node.attrs.blocksize
    n, c, h, w = v.shape
    if node.attrs.mode == "DCR":
        v = v.reshape(n, r, r, c // (r * r), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        v = v.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return v.reshape(n, c // (r * r), h * r, w * r)


def tile(graph, node, values):
    return np.tile(values[node.inputs[0]], (1, node.attrs.times, 1, 1))


def max_pool(graph, node, values):
    v = values[node.inputs[0]]
    k, s = node.attrs.kernel, node.attrs.stride
    n, c, h, w = v.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((n, c, ho, wo), np.iinfo(np.int32).min if np.issubdtype(v.dtype, np.integer) else -np.inf,
                  dtype=v.dtype)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, v[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s])
    return out


def crop(graph, node, values):
    h, w = values[node.inputs[1]].shape[-2:]
    return values[node.inputs[0]][:, :, :h, :w]


def sigmoid(graph, node, values):
    v = real(graph.tensor(node.inputs[0]), values[node.inputs[0]])
    with np.errstate(over="ignore"):  # exp(-v) = inf for v < -88: the sigmoid is 0, as in float32
        return quantize(graph.tensor(node.output), (F32(1) / (F32(1) + np.exp(-v))).astype(F32))


def adq_scale(graph, node, values):
    v = real(graph.tensor(node.inputs[0]), values[node.inputs[0]])
    std = v.reshape(v.shape[0], -1).astype(np.float64).std(axis=1, ddof=1).astype(F32)
    return (F32(node.attrs.a) * std + F32(node.attrs.c)).reshape(-1, 1, 1, 1).astype(F32)


def pad(graph, node, values):
    ph, pw = node.attrs.pads
    return np.pad(values[node.inputs[0]], ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="symmetric")


def reinterpret(graph, node, values):
    return values[node.inputs[0]]


KERNELS = {
    "conv": conv,
    "float_conv": float_conv,
    "requant": requant,
    "add": _elementwise(lambda a, b: a + b),
    "mul": _elementwise(lambda a, b: a * b),
    "concat": concat,
    "depth_to_space": depth_to_space,
    "tile": tile,
    "max_pool": max_pool,
    "crop": crop,
    "sigmoid": sigmoid,
    "adq_scale": adq_scale,
    "pad": pad,
    "reinterpret": reinterpret,
}
check_dispatch(KERNELS, "exact arithmetic")
