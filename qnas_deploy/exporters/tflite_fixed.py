"""LiteRT's builtin int8 arithmetic in numpy: gemmlowp fixed point (FACTS.md section 5).

The builtin kernels turn every real multiplier into a Q31 integer and a power-of-two
shift (``QuantizeMultiplier``: double -> Q31, ties away from zero), then requantise with
``SaturatingRoundingDoublingHighMul`` followed by ``RoundingDivideByPOT`` (the default
build, ``TFLITE_SINGLE_ROUNDING=0``). The multipliers are computed here in double from
the float32 scales the file holds, exactly as the kernels' Prepare does, so the
reference reproduces the interpreter bit for bit. Integers stay in the uint8 domain of
the IR: ``q - zero_point`` is the same in the file's int8 container, which only shifts
both by ``127 - qmax``. Bilinear resize is the one kernel that rounds raw int8 values,
so it converts explicitly.
"""
from __future__ import annotations

import math

import numpy as np

from .reference import _OPS, _conv_int
from .tflite import int8_grid, widen

F32 = np.float32


def quantize_multiplier(m: float) -> tuple[int, int]:
    """(Q31 significand, exponent) with ``m ~= significand * 2^(exponent - 31)``."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))  # std::round: ties away (q > 0)
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return q_fixed, shift


def _div_pow2_trunc(v: np.ndarray, bits: int) -> np.ndarray:
    """C++ integer division by ``2^bits`` (truncation toward zero)."""
    return np.where(v >= 0, v >> bits, -((-v) >> bits))


def srdhm(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul (int32 x int32 -> high 32 bits, rounded)."""
    ab = a.astype(np.int64) * np.asarray(b, np.int64)
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    return _div_pow2_trunc(ab + nudge, 31)


def rounding_divide_by_pot(x: np.ndarray, exponent) -> np.ndarray:
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, significand, shift) -> np.ndarray:
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rounding_divide_by_pot(srdhm(x.astype(np.int64) << left, significand), right)


def multiply_round_half_up(x: np.ndarray, significand, shift) -> np.ndarray:
    """ruy's variant (LiteRT's x86 conv path): the final right shift rounds ties upward."""
    shift = np.asarray(shift, np.int64)
    right = np.maximum(-shift, 0)
    high = srdhm(x.astype(np.int64) << np.maximum(shift, 0), significand)
    return (high + ((np.int64(1) << right) >> 1)) >> right


# The optimized depthwise kernel requantises blocks of this many channels in SIMD (ties
# upward, as ruy) and the remaining channels with the scalar gemmlowp routine.
DEPTHWISE_SIMD_CHANNELS = 8


def requantize_conv(acc: np.ndarray, significand: np.ndarray, shift: np.ndarray, depthwise: bool) -> np.ndarray:
    """Requantisation of a CONV_2D (ruy) or DEPTHWISE_CONV_2D accumulator ``[N, C, H, W]``."""
    out = multiply_round_half_up(acc, significand, shift)
    if depthwise:
        c = acc.shape[1]
        tail = c - c % DEPTHWISE_SIMD_CHANNELS
        if tail < c:
            out[:, tail:] = multiply_by_quantized_multiplier(acc[:, tail:], significand[:, tail:], shift[:, tail:])
    return out


def _per_channel(multipliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(m)) for m in multipliers]
    return (np.array([p[0] for p in pairs], np.int64).reshape(1, -1, 1, 1),
            np.array([p[1] for p in pairs], np.int64).reshape(1, -1, 1, 1))


def _clip(q: np.ndarray, t) -> np.ndarray:
    return np.clip(q + t.zero_point, t.qmin, t.qmax).astype(np.int32)


# operations (same signature as reference.py's) ------------------------------------------

def conv(graph, node, values, packed_int4: bool = False):
    a = node.attrs
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    if a.get("float") or not (xt.quantized and yt.quantized):
        return _OPS["conv"](graph, node, values)
    x = values[node.inputs[0]].astype(np.int64) - xt.zero_point
    weight, bias = a["weight"], a["bias"]
    w_scale = (a["w_scale"].astype(F32) * F32(a["mult"])).astype(F32)
    if not (packed_int4 and a["w_bits"] <= 4):  # the file widens every int8 filter
        weight, w_scale, bias = widen(weight, w_scale, bias)
    acc = _conv_int(x, weight, a["stride"], a["pad"], a["dilation"], a["groups"])
    acc = acc + bias.astype(np.int64).reshape(1, -1, 1, 1)
    sig, sh = _per_channel(float(F32(xt.scale)) * w_scale.astype(np.float64) / float(F32(yt.scale)))
    depthwise = a["groups"] == xt.channels == yt.channels and a["groups"] > 1
    if a["groups"] > 1 and not depthwise:  # grouped convs run TFLite's reference kernel
        return _clip(multiply_by_quantized_multiplier(acc, sig, sh), yt)
    return _clip(requantize_conv(acc, sig, sh, depthwise), yt)


def _requant_values(xt, v, yt) -> np.ndarray:
    if xt.same_grid(yt):
        return v
    # The TFLite file requantises with an identity depthwise conv, weight 1 at scale 1 widened
    # to weight 64 at scale 1/64 (tflite.widen).
    w, s, _ = widen(np.ones((xt.channels, 1, 1, 1), np.int8), np.ones(xt.channels, F32), np.zeros(xt.channels, np.int32))
    sig, sh = _per_channel(float(F32(xt.scale)) * s.astype(np.float64) / float(F32(yt.scale)))
    acc = (v.astype(np.int64) - xt.zero_point) * w.reshape(1, -1, 1, 1).astype(np.int64)
    return _clip(requantize_conv(acc, sig, sh, xt.channels > 1), yt)


def requant(graph, node, values):
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    if not (xt.quantized and yt.quantized):
        return _OPS["requant"](graph, node, values)
    return _requant_values(xt, values[node.inputs[0]], yt)


def concat(graph, node, values):
    yt = graph.tensor(node.output)
    parts = [_requant_values(graph.tensor(i), values[i], yt) for i in node.inputs]
    return np.concatenate(parts, axis=1)


# LiteRT's optimized int8 ADD (``optimized_integer_ops::AddElementwise``) handles blocks of
# this many elements in SIMD and the rest with the scalar gemmlowp routine.
ADD_SIMD_LANES = 16


def add(graph, node, values):
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized) or node.attrs.get("mult", 1.0) != 1.0:
        return _OPS["add"](graph, node, values)
    left_shift = 20
    twice_max = float(2 * max(F32(ta.scale), F32(tb.scale)))
    m1 = quantize_multiplier(float(F32(ta.scale)) / twice_max)
    m2 = quantize_multiplier(float(F32(tb.scale)) / twice_max)
    mo = quantize_multiplier(twice_max / ((1 << left_shift) * float(F32(tc.scale))))
    va = values[node.inputs[0]].astype(np.int64) - ta.zero_point
    vb = values[node.inputs[1]].astype(np.int64) - tb.zero_point
    # The kernel's 16-lane loop (NEON, or its SSE translation on x86) folds each input's
    # right shift into the left shift before the high multiply; the scalar loop over the
    # last size % 16 elements (NHWC order) shifts after it. They differ near ties.
    n, c, h, w = va.shape
    flat = np.arange(va.size).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    simd = flat < va.size - va.size % ADD_SIMD_LANES
    sa = np.where(simd, srdhm(va << (left_shift + m1[1]), m1[0]),
                  rounding_divide_by_pot(srdhm(va << left_shift, m1[0]), -m1[1]))
    sb = np.where(simd, srdhm(vb << (left_shift + m2[1]), m2[0]),
                  rounding_divide_by_pot(srdhm(vb << left_shift, m2[0]), -m2[1]))
    return _clip(rounding_divide_by_pot(srdhm(sa + sb, mo[0]), -mo[1]), tc)


def add_xnnpack(graph, node, values):
    """XNNPACK's int8 ADD: both scale ratios as integers with 20 significant bits below the
    larger ratio's exponent, one shared right shift, ties rounded upward (onnxruntime's
    MLAS copy of the kernel keeps 21 bits, see ``reference.qlinear_add_ort``)."""
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized) or node.attrs.get("mult", 1.0) != 1.0:
        return _OPS["add"](graph, node, values)
    ra, rb = F32(F32(ta.scale) / F32(tc.scale)), F32(F32(tb.scale) / F32(tc.scale))
    exponent = int(np.array(max(ra, rb), F32).view(np.uint32) >> 23) - 127
    shift = 20 - exponent
    mant = F32(2.0 ** shift)
    ma, mb = int(np.rint(ra * mant)), int(np.rint(rb * mant))
    acc = (ma * (values[node.inputs[0]].astype(np.int64) - ta.zero_point)
           + mb * (values[node.inputs[1]].astype(np.int64) - tb.zero_point))
    return _clip((acc + (1 << (shift - 1))) >> shift, tc)


def mul_scale(sb: float, mult: float) -> float:
    """The declared scale of the second input of an int8 MUL carrying a constant factor."""
    return float(F32(F32(sb) * F32(mult)))


def mul(graph, node, values):
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized):
        return _OPS["mul"](graph, node, values)
    sb = mul_scale(tb.scale, node.attrs.get("mult", 1.0))
    sig, sh = quantize_multiplier(float(F32(ta.scale)) * sb / float(F32(tc.scale)))
    prod = (values[node.inputs[0]].astype(np.int64) - ta.zero_point) * (values[node.inputs[1]].astype(np.int64)
                                                                          - tb.zero_point)
    return _clip(multiply_by_quantized_multiplier(prod, sig, sh), tc)


def mul_xnnpack(graph, node, values):
    """XNNPACK's int8 MUL: the integer product times one float32 scale, rounded half to even."""
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized):
        return _OPS["mul"](graph, node, values)
    scale = F32(F32(F32(ta.scale) * F32(mul_scale(tb.scale, node.attrs.get("mult", 1.0)))) / F32(tc.scale))
    prod = (values[node.inputs[0]].astype(np.int64) - ta.zero_point) * (values[node.inputs[1]].astype(np.int64)
                                                                          - tb.zero_point)
    return _clip(np.rint(prod.astype(F32) * scale).astype(np.int64), tc)


def sigmoid(graph, node, values):
    """The int8 LOGISTIC lookup table: float sigmoid of each level, rounded half away."""
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    levels = np.arange(xt.qmin, xt.qmax + 1)
    x = F32(xt.scale) * (levels - xt.zero_point).astype(F32)
    y = (F32(1) / (F32(1) + np.exp(-x))).astype(F32) * F32(1 / F32(yt.scale))
    table = np.clip(np.floor(np.abs(y) + 0.5) * np.sign(y) + yt.zero_point, yt.qmin, yt.qmax).astype(np.int32)
    return table[values[node.inputs[0]] - xt.qmin]


def resize(graph, node, values):
    """``ResizeBilinearInteger``: 10-bit fixed-point weights on the raw int8 values."""
    xt = graph.tensor(node.inputs[0])
    v = values[node.inputs[0]].astype(np.int64) + (int8_grid(xt)[0] - xt.zero_point)  # raw int8
    n, c, h, w = v.shape
    oh, ow = values[node.inputs[1]].shape[-2:]

    def axis(o, i):
        scale = ((1 << 10) * i + o // 2) // o
        pos = np.arange(o) * scale + scale // 2 - (1 << 9)
        lo = np.maximum(_div_pow2_trunc(pos, 10), 0)
        hi = np.minimum(_div_pow2_trunc(pos + (1 << 10) - 1, 10), i - 1)
        frac = pos - (1 << 10) * lo
        return lo, hi, (1 << 10) - frac, frac

    y0, y1, wy0, wy1 = axis(oh, h)
    x0, x1, wx0, wx1 = axis(ow, w)
    wy0, wy1 = wy0[:, None], wy1[:, None]
    acc = (v[:, :, y0][:, :, :, x0] * wy0 * wx0 + v[:, :, y1][:, :, :, x0] * wy1 * wx0
           + v[:, :, y0][:, :, :, x1] * wy0 * wx1 + v[:, :, y1][:, :, :, x1] * wy1 * wx1)
    rnd = np.where(acc > 0, 1 << 19, -(1 << 19))
    q = _div_pow2_trunc(acc + rnd, 20)
    return (q - (int8_grid(xt)[0] - xt.zero_point)).astype(np.int32)

