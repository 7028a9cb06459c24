"""LiteRT's int8 arithmetic in numpy: the builtin kernels' gemmlowp fixed point (FACTS.md
section 5), and XNNPACK's kernels where they differ from the exact arithmetic.

The builtin kernels turn every real multiplier into a Q31 integer and a power-of-two
shift (``QuantizeMultiplier``: double -> Q31, ties away from zero), then requantise with
``SaturatingRoundingDoublingHighMul`` followed by ``RoundingDivideByPOT`` (the default
build, ``TFLITE_SINGLE_ROUNDING=0``). The multipliers are computed here in double from
the float32 scales the file holds, exactly as the kernels' Prepare does, so the
reference reproduces the interpreter bit for bit. Integers stay in the uint8 domain of
the IR: ``q - zero_point`` is the same in the file's int8 container, which only shifts
both by ``127 - qmax``.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from ..ir import check_dispatch
from . import exact, onnxruntime

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


# kernels (the signature of exact.py's) ------------------------------------------------

def conv(graph, node, values, optimized: bool = True):
    """CONV_2D / DEPTHWISE_CONV_2D. The optimized kernels requantise as ruy (ties upward)
    and in SIMD blocks; the reference kernels (and the optimized build's grouped convs)
    with the scalar gemmlowp routine everywhere."""
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    if not (xt.quantized and yt.quantized):
        return exact.KERNELS["conv"](graph, node, values)
    a = node.attrs
    acc = exact.accumulate(graph, node, values)
    sig, sh = _per_channel(float(F32(xt.scale)) * a.scaled_w_scale().astype(np.float64) / float(F32(yt.scale)))
    depthwise = a.depthwise(xt.channels)
    if not optimized or (a.groups > 1 and not depthwise):  # grouped convs run TFLite's reference kernel
        return _clip(multiply_by_quantized_multiplier(acc, sig, sh), yt)
    return _clip(requantize_conv(acc, sig, sh, depthwise), yt)


# LiteRT's optimized int8 ADD (``optimized_integer_ops::AddElementwise``) handles blocks of
# this many elements in SIMD and the rest with the scalar gemmlowp routine.
ADD_SIMD_LANES = 16


def add(graph, node, values, simd_lanes: int | None = ADD_SIMD_LANES):
    """int8 ADD; ``simd_lanes=None`` is the reference kernel: the scalar routine everywhere."""
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized) or node.attrs.mult != 1.0:
        return exact.KERNELS["add"](graph, node, values)
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
    simd = flat < (va.size - va.size % simd_lanes if simd_lanes else 0)
    sa = np.where(simd, srdhm(va << (left_shift + m1[1]), m1[0]),
                  rounding_divide_by_pot(srdhm(va << left_shift, m1[0]), -m1[1]))
    sb = np.where(simd, srdhm(vb << (left_shift + m2[1]), m2[0]),
                  rounding_divide_by_pot(srdhm(vb << left_shift, m2[0]), -m2[1]))
    return _clip(rounding_divide_by_pot(srdhm(sa + sb, mo[0]), -mo[1]), tc)


def add_xnnpack(graph, node, values):
    """XNNPACK's int8 ADD: both scale ratios as integers with 20 significant bits below the
    larger ratio's exponent, one shared right shift, ties rounded upward (onnxruntime's
    aarch64 copy of the kernel keeps 21 bits and rounds ties away from zero)."""
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized) or node.attrs.mult != 1.0:
        return exact.KERNELS["add"](graph, node, values)
    ra, rb = F32(F32(ta.scale) / F32(tc.scale)), F32(F32(tb.scale) / F32(tc.scale))
    exponent = int(np.array(max(ra, rb), F32).view(np.uint32) >> 23) - 127
    shift = 20 - exponent
    mant = F32(2.0 ** shift)
    ma, mb = int(np.rint(ra * mant)), int(np.rint(rb * mant))
    acc = (ma * (values[node.inputs[0]].astype(np.int64) - ta.zero_point)
           + mb * (values[node.inputs[1]].astype(np.int64) - tb.zero_point))
    return _clip((acc + (1 << (shift - 1))) >> shift, tc)


def _quantized_mul(graph, node) -> bool:
    if node.attrs.mult != 1.0 and all(graph.tensor(t).quantized for t in (*node.inputs, node.output)):
        raise ValueError(f"{node.name}: a quantized mul with a factor; run the target-lowered graph (mult_as_view)")
    return all(graph.tensor(t).quantized for t in (*node.inputs, node.output))


def mul(graph, node, values):
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not _quantized_mul(graph, node):
        return exact.KERNELS["mul"](graph, node, values)
    sb = float(F32(tb.scale))
    sig, sh = quantize_multiplier(float(F32(ta.scale)) * sb / float(F32(tc.scale)))
    prod = (values[node.inputs[0]].astype(np.int64) - ta.zero_point) * (values[node.inputs[1]].astype(np.int64)
                                                                          - tb.zero_point)
    return _clip(multiply_by_quantized_multiplier(prod, sig, sh), tc)


def mul_xnnpack(graph, node, values):
    """XNNPACK's int8 MUL: the integer product times one float32 scale, rounded half to even."""
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not _quantized_mul(graph, node):
        return exact.KERNELS["mul"](graph, node, values)
    scale = F32(F32(F32(ta.scale) * F32(tb.scale)) / F32(tc.scale))
    prod = (values[node.inputs[0]].astype(np.int64) - ta.zero_point) * (values[node.inputs[1]].astype(np.int64)
                                                                          - tb.zero_point)
    return _clip(np.rint(prod.astype(F32) * scale).astype(np.int64), tc)


def sigmoid(graph, node, values):
    """The int8 LOGISTIC lookup table: float sigmoid of each level, rounded half away."""
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    levels = np.arange(xt.qmin, xt.qmax + 1)
    x = F32(xt.scale) * (levels - xt.zero_point).astype(F32)
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88: the sigmoid is 0, as in float32
        y = (F32(1) / (F32(1) + np.exp(-x))).astype(F32) * F32(1 / F32(yt.scale))
    table = np.clip(np.floor(np.abs(y) + 0.5) * np.sign(y) + yt.zero_point, yt.qmin, yt.qmax).astype(np.int32)
    return table[values[node.inputs[0]] - xt.qmin]


def int4_in_builtin(builtin_conv):
    """XNNPACK's conv, but for convs with packed INT4 filters: the delegate takes no INT4
    conv filter (``xnnpack_delegate.cc``, ``CheckTensorFloat32OrQCInt8Type``), so LiteRT
    runs them in its builtin kernel (``builtin_conv``, which rounds per CPU)."""
    def conv_(graph, node, values):
        if node.attrs.storage == "int4":
            return builtin_conv(graph, node, values)
        return onnxruntime.KERNELS["conv"](graph, node, values)
    return conv_


XNNPACK = {**onnxruntime.KERNELS, "add": add_xnnpack, "mul": mul_xnnpack, "conv": int4_in_builtin(conv)}
BUILTIN = {**exact.KERNELS, "conv": conv, "add": add, "mul": mul, "sigmoid": sigmoid}
# The reference kernels (OpResolverType.BUILTIN_REF): plain C++, no SIMD paths, so the same
# on every CPU; they differ from the optimized ones only in how conv and add requantise.
BUILTIN_REF = {**BUILTIN, "conv": partial(conv, optimized=False), "add": partial(add, simd_lanes=None)}
for _name, _table in (("XNNPACK", XNNPACK), ("builtin", BUILTIN), ("builtin reference", BUILTIN_REF)):
    check_dispatch(_table, f"LiteRT {_name} arithmetic")


# LiteRT's optimized builtin kernels on aarch64 ------------------------------------------
#
# The aarch64 build runs the same C++ as the x86 one (whose NEON code x86 compiles through
# NEON_2_SSE) but for two kernels, which have aarch64-only code:
#
# * CONV_2D goes to ruy (``optimized_integer_ops::ConvPerChannel`` ->
#   ``cpu_backend_gemm::Gemm``: ruy on ARM, ``TFLITE_WITH_RUY``), whose arm64 kernels
#   requantise with one rounding since ruy's "Simplify quantized multiplier" (ruy commit
#   be760b6, 2021): ``sshl``, ``sqdmulh`` (truncating), ``srshl`` (ties upward). ruy's x86
#   AVX2 kernels kept gemmlowp's two roundings (``multiply_round_half_up`` above). A conv
#   with a single output pixel skips ruy for LiteRT's own GEMV (``custom_gemv``), which
#   rounds twice on both machines.
# * DEPTHWISE_CONV_2D with a 3x3 filter takes the hand-written kernel
#   ``DepthwiseConv3x3FilterPerChannel`` (``integer_ops/depthwise_conv_3x3_filter.h``),
#   compiled under ``#if defined(__aarch64__)`` in ``integer_ops/depthwise_conv.h``
#   (``DepthwiseConvWithRounding``); x86 runs ``DepthwiseConvGeneral`` for it.
#
# Everything else is the x86 arithmetic: the other depthwise convs (``DepthwiseConvGeneral``
# -> ``optimized_ops::Quantize``: ``vqrdmulhq_s32`` + ``vrshlq_s32`` in 8-channel blocks,
# scalar gemmlowp for the rest), ADD (``optimized_integer_ops::AddElementwiseInt8``) and MUL
# (``MulElementwise``): ARM's ``SQRDMULH`` is ``(2ab + 2^31) >> 32``, which is gemmlowp's
# ``SaturatingRoundingDoublingHighMul`` (``srdhm``: ties upward, negative ones too) bit for
# bit, and NEON_2_SSE's ``vqrdmulhq_s32`` computes the same; gemmlowp's NEON
# ``RoundingDivideByPOT`` (``fixedpoint_neon.h``: the ``fixup`` before ``vrshlq_s32``) is
# its scalar one. The LOGISTIC table is the same float code (``LUTPopulateInt8``). Every
# aarch64 CPU computes alike: ruy's kernels for CPUs without the dot product
# (``Kernel8bitNeon``, ``Kernel8bitNeonA55ish``) and with it (``Kernel8bitNeonDotprod``,
# its X1 fork) share the requantisation, ruy has no i8mm kernel, and the dot-product 3x3
# depthwise kernel is compiled for Android (``__ANDROID__ && __clang__``) only.

def _wrap_int32(v: np.ndarray) -> np.ndarray:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def ruy_arm64_requantize(acc: np.ndarray, significand, shift) -> np.ndarray:
    """ruy's arm64 int8 requantisation (``ruy/kernel_arm64.cc``, every ``Kernel8bitNeon*``):

    ``mvni v8, #0; smin v11, v8, exp; sub v12, exp, v11`` split the exponent into a left
    shift ``max(exp + 1, 0)`` and a right shift ``max(-exp, 1)``, never 0; then ``sshl``
    (int32, wrapping), ``sqdmulh`` (the high half of ``2ab``, truncated: no rounding) and
    ``srshl`` (rounding right shift, ties upward). Where nothing wraps this is one rounding,
    ``(acc * m + 2^(30 - exp)) >> (31 - exp)`` (ruy's ``MultiplyByQuantizedMultiplier`` in
    ``apply_multiplier.cc``): ``floor(floor(y / 2^31) / 2^k + 1/2) == floor((y + 2^(30+k)) / 2^(31+k))``.
    """
    shift = np.asarray(shift, np.int64)
    right = np.maximum(-shift, 1)
    left = shift + right
    x = _wrap_int32(acc.astype(np.int64) << left)
    high = (x * np.asarray(significand, np.int64)) >> 31      # sqdmulh: m >= 0, so it never saturates
    return (high + (np.int64(1) << (right - 1))) >> right     # srshl by -right


def fast_3x3_depthwise(node, input_hw: tuple[int, int]) -> bool:
    """Whether aarch64 LiteRT runs this depthwise conv in its 3x3 kernel
    (``depthwise_conv::Fast3x3FilterKernelSupported``, ``depthwiseconv_3x3_filter_common.h``):
    a 3x3 filter, depth multiplier 1, stride 1 or 2, no dilation, a depth that is a multiple
    of 8 and a padding of 0 or 1. The TFLite writer pads a stride-1 ``same`` 3x3 conv in the
    conv (LiteRT sees padding 1) and any other padding with a PAD op (padding 0); with
    padding 1 an input of width 1 and height > 1 (or the converse) is not supported."""
    a = node.attrs
    if tuple(a.kernel) != (3, 3) or a.dilation != 1 or a.stride not in (1, 2) or a.c_out % 8:
        return False
    h, w = input_hw
    padded_in_conv = a.stride == 1 and tuple(a.pad) == (1, 1)
    return not (padded_in_conv and (h == 1) != (w == 1))


def requantize_3x3_depthwise(acc: np.ndarray, significand, shift) -> np.ndarray:
    """``DepthwiseConvWindowPerChannel`` (``integer_ops/depthwise_conv_3x3_filter.h``):
    ``sqrdmulh`` by the multiplier, then ``sqrshl`` by the shift, on every channel. The shift
    comes after the multiply even where it is positive (the generic kernels shift the
    accumulator left before it), and ``Fast3x3FilterKernelSupported`` does not look at the
    per-channel shifts. ``sqrshl`` saturates to int32, which the int8 clamp after it hides."""
    shift = np.asarray(shift, np.int64)
    high = srdhm(acc, significand)                            # sqrdmulh == srdhm
    right = np.maximum(-shift, 0)
    return np.where(shift > 0, high << np.maximum(shift, 0), (high + ((np.int64(1) << right) >> 1)) >> right)


def custom_gemv(node, acc_shape) -> bool:
    """Whether the conv's GEMM is a matrix times a vector that ``cpu_backend_gemm::Gemm``
    hands to ``detail::CustomGemv`` (``cpu_backend_gemm_custom_gemv.h``) instead of ruy: one
    output pixel (``dst_params.cols == 1``), at least 4 output channels (``kKernelRows``) and
    at least 8 values per filter (``lhs_params.cols >= 8``). Its NEON loop requantises as
    ``optimized_ops::Quantize`` does (``vshlq_s32``, ``vqrdmulhq_s32``, ``vrshlq_s32``): the
    x86 formula, on x86 and aarch64 alike."""
    n, _, h, w = acc_shape
    return n * h * w == 1 and node.attrs.c_out >= 4 and node.attrs.weight[0].size >= 8


def conv_aarch64(graph, node, values):
    """CONV_2D / DEPTHWISE_CONV_2D of LiteRT's optimized builtin kernels on aarch64."""
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    if not (xt.quantized and yt.quantized):
        return exact.KERNELS["conv"](graph, node, values)
    a = node.attrs
    depthwise = a.depthwise(xt.channels)
    x = values[node.inputs[0]]
    if (a.groups > 1 and not depthwise) or (depthwise and not fast_3x3_depthwise(node, x.shape[-2:])):
        return conv(graph, node, values)  # the reference kernel, DepthwiseConvGeneral: as on x86
    acc = exact.accumulate(graph, node, values)
    sig, sh = _per_channel(float(F32(xt.scale)) * a.scaled_w_scale().astype(np.float64) / float(F32(yt.scale)))
    if depthwise:
        return _clip(requantize_3x3_depthwise(acc, sig, sh), yt)
    if custom_gemv(node, acc.shape):
        return _clip(multiply_round_half_up(acc, sig, sh), yt)
    return _clip(ruy_arm64_requantize(acc, sig, sh), yt)


BUILTIN_AARCH64 = {**BUILTIN, "conv": conv_aarch64}
XNNPACK_AARCH64 = {**XNNPACK, "conv": int4_in_builtin(conv_aarch64)}
check_dispatch(BUILTIN_AARCH64, "LiteRT builtin arithmetic (aarch64)")
check_dispatch(XNNPACK_AARCH64, "LiteRT XNNPACK arithmetic (aarch64)")
