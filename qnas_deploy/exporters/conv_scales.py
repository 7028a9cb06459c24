"""Conv weight scales moved by a few float32 ulps so that OpenVINO, and LiteRT's builtin
kernels on aarch64, requantise every conv exactly.

The model (and onnxruntime, and XNNPACK) requantises a conv's accumulator ``A = a + b``
(its bias ``b`` included) in one rounding: ``rint(f32(A) M)``. OpenVINO's CPU plugin, for a
conv with a bias, rounds three times: ``f32(f32(a dq) + f32(b dq))``, then the FakeQuantize
``fma(v, isc, ish)`` (``arithmetic.openvino.requantize_conv``). The two part only where the
exact value lies within float32 rounding of a half step: a few accumulator values in a
hundred thousand, but RFDN's trained convs met them on 161 values of two Set5 images, and
ESA's sigmoid mask spread them to 0.009 dB.

One output channel of a conv is a map of one integer, its accumulator, and only a window
of it matters: the values its weights can reach whose result is not clipped by more than
a step (10^3 to 10^6 integers), few enough to check whole. So the fix is checked, not
hoped for: after calibration each channel whose OpenVINO map differs from the model's on
some accumulator of its window gets the nearest LSQ weight step (in float32 ulps, up to
:data:`MAX_ULPS`; its float weights and bias scaled with it so that the stored integers stay)
at which the two maps agree on the whole window. The model holds the moved step, so
PyTorch, the reference and every runtime compute the new map; it differs from the old one
on the few accumulators that lay within the move of a tie (parts per million of the scale).

LiteRT's builtin kernels on aarch64 requantise a conv that is not grouped in ruy, in one
rounding of the exact product by the 31-bit multiplier (``arithmetic.litert.conv_aarch64``),
which parts from the float32 one on near-ties of its own (the shipped anchored entries met
them: 0.00006 dB). The same window is checked in that kernel too, so the move makes a
channel exact in both (the shipped weights: 23-69 channels more, <= 7e-7 relative).
A grouped or depthwise conv rounds twice there, on about ``2^-(s+1)`` of all accumulators,
which no move clears; it is not checked in that kernel.

A conv without a bias (the bicubic anchor's fixed one, an initialised network's) is
requantised with its scale folded into the FakeQuantize, whose constants are not the model's
multiplier and whose shift all channels share (channel 0's, where they agree within 5e-5):
its channels are checked with the whole conv's constants, and a move that changes what they
share is checked on every channel. ESA's upsampling (a fixed step with a bias of one unit
that puts its ties where every runtime rounds them alike, ``spaces/rfdn.GridUpsample``)
stays as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .arithmetic import exact, litert, openvino
from .ir import Graph, Node, Tensor

MAX_ULPS = 512         # float32 ulps the step may move, each way
CHUNK = 1 << 18        # accumulator values checked at a time
MAX_WINDOW = 1 << 24   # a longer window is not checked (float32 holds every integer below 2^24)


@dataclass
class SnappedConv:
    conv: str                      # the conv's output tensor in the canonical graph
    channel: int
    old_scale: float
    new_scale: float


def window(xt: Tensor, yt: Tensor, attrs) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the accumulators without the bias ``[lo, hi]`` that matter: those
    the weights can reach from ``xt``'s levels (padding adds 0) whose exact result lies
    within 1.5 steps of ``yt``'s range (beyond it, every arithmetic clips alike)."""
    w = attrs.weight.reshape(attrs.c_out, -1).astype(np.int64)
    x0, x1 = xt.qmin - xt.zero_point, xt.qmax - xt.zero_point
    lo = np.minimum(np.minimum(w * x0, w * x1).sum(1), 0)
    hi = np.maximum(np.maximum(w * x0, w * x1).sum(1), 0)
    m = np.float64(np.float32(xt.scale)) * attrs.scaled_w_scale().astype(np.float64) / np.float64(np.float32(yt.scale))
    b = attrs.bias_or_zeros().astype(np.int64)
    wlo = np.ceil((yt.qmin - yt.zero_point - 1.5) / m).astype(np.int64) - b
    whi = np.floor((yt.qmax - yt.zero_point + 1.5) / m).astype(np.int64) - b
    return np.maximum(lo, wlo), np.minimum(hi, whi)


def in_ruy(attrs) -> bool:
    """Whether LiteRT's builtin kernels on aarch64 requantise the conv ``attrs`` in ruy, in one
    rounding of the exact product by a 31-bit multiplier (``arithmetic.litert.conv_aarch64``):
    a conv that is not grouped (those run the reference kernel or a depthwise one, which round
    twice, about ``2^-(s+1)`` of all accumulators: no move clears them). Widening (``passes/widen``)
    scales the accumulator and the multiplier by powers of two, which that rounding keeps."""
    return attrs.groups == 1


def _ruy(acc: np.ndarray, xt: Tensor, yt: Tensor, attrs, channel: int | None = None) -> np.ndarray:
    """aarch64 LiteRT's requantisation of a conv's accumulator (bias included) onto ``yt``."""
    m = float(np.float32(xt.scale)) * attrs.scaled_w_scale().astype(np.float64) / float(np.float32(yt.scale))
    if channel is not None:
        m = m[channel:channel + 1]
    sig, sh = litert._per_channel(m)
    return litert._clip(litert.ruy_arm64_requantize(acc, sig, sh), yt)


def _differ(a: np.ndarray, bias, xt: Tensor, yt: Tensor, attrs, last: bool, arm: bool,
            channel: int | None = None) -> np.ndarray:
    """Where OpenVINO (and, with ``arm``, aarch64 LiteRT's ruy) requantise accumulators ``a``
    (without the bias) otherwise than the exact arithmetic."""
    one = attrs if channel is None else _channel(attrs, channel)
    want = exact.requantize_conv(a + bias, xt, yt, one)
    off = want != openvino.requantize_conv(a, xt, yt, attrs, last=last, channel=channel)
    if arm and in_ruy(attrs):
        off |= want != _ruy(a + bias, xt, yt, attrs, channel)
    return off


def conv_mismatches(xt: Tensor, yt: Tensor, attrs, lo: np.ndarray, hi: np.ndarray, last: bool = True,
                    arm: bool = True) -> np.ndarray:
    """Per channel, the accumulators of its window on which OpenVINO (and, with ``arm``,
    aarch64 LiteRT) requantises the conv ``attrs`` otherwise than the exact arithmetic, all
    channels at once: without a bias the plugin shares one FakeQuantize shift across them
    (channel 0's, where they agree)."""
    c = attrs.c_out
    bad = np.zeros(c, np.int64)
    bias = attrs.bias_or_zeros().astype(np.int64).reshape(1, -1, 1, 1)
    length = int((hi - lo).max(initial=-1)) + 1
    for start in range(0, length, CHUNK):
        j = np.arange(start, min(length, start + CHUNK), dtype=np.int64)
        a = np.minimum(lo[:, None] + j[None, :], hi[:, None])[None, :, None, :]  # the window's end repeated
        bad += np.count_nonzero(_differ(a, bias, xt, yt, attrs, last, arm), axis=(0, 2, 3))
    return bad


def _channel(attrs, c: int):
    return attrs.replace(weight=attrs.weight[c:c + 1], w_scale=attrs.w_scale[c:c + 1],
                         bias=attrs.bias_or_zeros()[c:c + 1], groups=1)


def _with_scale(attrs, c: int, w_scale):
    ws = attrs.w_scale.copy()
    ws[c] = w_scale
    return attrs.replace(w_scale=ws)


def bad_channels(graph: Graph, node: Node, arm: bool = True) -> dict[int, int]:
    """Channels of conv ``node`` (of the ``openvino`` target's graph) whose OpenVINO map (and,
    with ``arm``, aarch64 LiteRT's) differs from the exact one somewhere in its window:
    channel -> accumulators."""
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    return _bad(xt, yt, node.attrs, *window(xt, yt, node.attrs), not openvino._fq_fused_after(graph, node.output), arm)


def _bad(xt: Tensor, yt: Tensor, attrs, lo: np.ndarray, hi: np.ndarray, last: bool, arm: bool = True) -> dict[int, int]:
    ok = (lo <= hi) & (hi < lo + MAX_WINDOW)
    if not openvino.keeps_dequantization(attrs):  # one shared shift: every channel at once
        if not ok.all():
            return {}
        bad = conv_mismatches(xt, yt, attrs, lo, hi, last, arm)
        return {int(c): int(bad[c]) for c in np.flatnonzero(bad)}
    out = {}
    for c in np.flatnonzero(ok):
        if bad := channel_mismatches(xt, yt, attrs, int(c), lo[c], hi[c], last, arm):
            out[int(c)] = bad
    return out


def checked(graph: Graph, node: Node) -> bool:
    """Whether the snap checks conv ``node`` of the ``openvino`` target's graph: a quantized
    int8 conv (not a depthwise 1x1 one, which ``pointwise_exact`` re-represents) that OpenVINO
    keeps dequantised and does not merge with another."""
    from .passes.pointwise_exact import pointwise

    if node.op != "conv" or node.attrs.storage != "int8" or pointwise(graph, node):
        return False
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    return xt.quantized and yt.quantized and not openvino._merged_unfused(graph, node)


def learned(module) -> bool:
    """A conv whose weight step is learned (not a fixed one: ESA's upsampling, the anchor)."""
    return module is not None and isinstance(module.weight_quant.step, torch.nn.Parameter)


def movable(module, attrs) -> bool:
    """A conv the snap may move: a learned one, or a fixed one without a bias (the bicubic
    anchor); ESA's upsampling has a bias that puts its ties where every runtime rounds them
    alike, on purpose (``spaces/rfdn.GridUpsample``), and stays."""
    return module is not None and (learned(module) or not openvino.keeps_dequantization(attrs))


def _ulps(scale: float) -> np.ndarray:
    """``scale`` (positive float32) moved by 1 .. :data:`MAX_ULPS` ulps, nearest first."""
    k = np.array(sorted([d for d in range(-MAX_ULPS, MAX_ULPS + 1) if d], key=lambda d: (abs(d), d)), np.int32)
    return (np.float32(scale).view(np.int32) + k).view(np.float32)


def channel_mismatches(xt: Tensor, yt: Tensor, attrs, c: int, lo: int, hi: int, last: bool = True,
                       arm: bool = True) -> int:
    """Accumulators without the bias in ``[lo, hi]`` on which OpenVINO (and, with ``arm``,
    aarch64 LiteRT) requantises channel ``c`` of the conv ``attrs`` (with the whole conv's
    constants: without a bias its channels share a FakeQuantize shift) otherwise than the
    exact arithmetic."""
    bias = np.int64(attrs.bias_or_zeros()[c])
    bad = 0
    for start in range(int(lo), int(hi) + 1, CHUNK):
        a = np.arange(start, min(int(hi) + 1, start + CHUNK), dtype=np.int64).reshape(1, 1, 1, -1)
        bad += int(np.count_nonzero(_differ(a, bias, xt, yt, attrs, last, arm, channel=c)))
    return bad


def _shared(xt: Tensor, yt: Tensor, attrs) -> tuple:
    """What the channels of a conv without a bias share in OpenVINO (``post_op_form``)."""
    dq = (np.float32(xt.scale) * attrs.scaled_w_scale()).astype(np.float32)
    il, ih = openvino.quantize_range(yt)
    return openvino.post_op_form((il / dq).astype(np.float32), (ih / dq).astype(np.float32))


def _exact_with(xt, yt, attrs, c: int, new, lo, hi, last: bool, bad: dict) -> bool:
    """Whether channel ``c`` at weight scale ``new`` is exact on its window (and, without a
    bias, no other channel is worse where their shared constants move: channel 0's shift)."""
    moved = _with_scale(attrs, c, new)
    if openvino.keeps_dequantization(attrs) or _shared(xt, yt, moved) == _shared(xt, yt, attrs):
        # only channel c's own constants moved
        return not channel_mismatches(xt, yt, moved, c, lo[c], hi[c], last)
    now = conv_mismatches(xt, yt, moved, lo, hi, last)
    was = np.array([bad.get(k, 0) for k in range(attrs.c_out)])
    return now[c] == 0 and bool(np.all(now <= was))


def _fix(module, x_scale: float, xt: Tensor, yt: Tensor, attrs, c: int, lo, hi, last: bool, bad: dict):
    """Move channel ``c``'s step of ``module`` (a ``QConv2d``) to the nearest scale at which
    the stored integers stay and OpenVINO's map is exact on its window; returns it or None."""
    from .builder import conv_integers

    wq = module.weight_quant
    row = slice(c, c + 1)
    w_int, _, b_int = conv_integers(module, x_scale, row)
    step, weight = wq.step.detach().clone(), module.weight.detach().clone()
    bias = module.bias.detach().clone() if module.bias is not None else None
    old = float(step[c].abs())
    for new in _ulps(old):
        f = float(new) / old
        with torch.no_grad():
            wq.step[c] = torch.sign(step[c]) * float(new)
            module.weight[c] = weight[c] * f
            if bias is not None:
                module.bias[c] = bias[c] * f
        w2, s2, b2 = conv_integers(module, x_scale, row)
        if s2[0] == new and np.array_equal(w2, w_int) and b2[0] == b_int[0] and \
                _exact_with(xt, yt, attrs, c, new, lo, hi, last, bad):
            return old, float(new)
    with torch.no_grad():
        wq.step.copy_(step)
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)
    return None


def snap(model) -> list[SnappedConv]:
    """Move the weight steps of ``model``'s convs (calibrated, lowerable) until OpenVINO (and
    aarch64 LiteRT's ruy) requantise each exactly on its whole window; returns what moved. A channel no step
    within :data:`MAX_ULPS` fixes is left as it is."""
    from .add_scales import openvino_lowered
    from .builder import lower_model

    convs: dict = {}
    graph = openvino_lowered(lower_model(model, convs=convs))
    moved = []
    for n in graph.nodes:
        module = convs.get(n.output)
        if not movable(module, n.attrs) or not checked(graph, n):
            continue
        xt, yt = graph.tensor(n.inputs[0]), graph.tensor(n.output)
        lo, hi = window(xt, yt, n.attrs)
        last = not openvino._fq_fused_after(graph, n.output)
        attrs, bad = n.attrs, _bad(xt, yt, n.attrs, lo, hi, last)
        for c in sorted(bad):  # channel 0 first: without a bias its shift is every channel's
            if not bad.get(c):
                continue
            fixed = _fix(module, xt.scale, xt, yt, attrs, c, lo, hi, last, bad)
            if fixed is not None:
                moved.append(SnappedConv(n.output, c, *fixed))
                before = _shared(xt, yt, attrs)
                attrs = _with_scale(attrs, c, np.float32(fixed[1]))
                if not openvino.keeps_dequantization(attrs) and _shared(xt, yt, attrs) != before:
                    now = conv_mismatches(xt, yt, attrs, lo, hi, last)
                    bad = {k: int(v) for k, v in enumerate(now) if v}
    return moved


def inexact(model, arm: bool = True) -> dict[str, int]:
    """The convs the snap moves whose OpenVINO map (and, with ``arm``, aarch64 LiteRT's)
    differs from the exact one somewhere in its window: output -> channels (the tests, the
    openvino export's hint)."""
    from .add_scales import openvino_lowered
    from .builder import lower_model

    convs: dict = {}
    graph = openvino_lowered(lower_model(model, convs=convs))
    return {n.output: len(bad) for n in graph.nodes
            if movable(convs.get(n.output), n.attrs) and checked(graph, n) and (bad := bad_channels(graph, n, arm))}
