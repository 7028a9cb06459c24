"""Every identity requantisation (a bias-free depthwise 1x1 conv) re-represented so that each
LiteRT kernel computes it exactly.

LiteRT's builtin DEPTHWISE_CONV_2D requantises in two roundings (gemmlowp
``SaturatingRoundingDoublingHighMul``, then ``RoundingDivideByPOT``; ties upward in its SIMD
channel blocks, the scalar routine for the rest), on x86 and aarch64 alike, so the few input
levels whose exact result lies just below a rounding boundary come out one step off, even
after ``widen``. On aarch64 that is all of builtin's distance to PyTorch on the shipped
basic_lrtail_bicubic (``benchmarks/results/builtin_rounding.md``: 0.018 dB, its full convs
run in ruy and round once there).

Such a conv maps each channel's ``qmax - qmin + 1`` input levels, so the fix is checked, not
hoped for: for each distinct channel ``(w, s)`` whose table some LiteRT arithmetic computes
otherwise than the exact one, the pass tries other representations of the same real map
(an integer weight ``w'`` of the same sign with scale ``s w / w'``, that scale moved by up to
:data:`ULPS` float32 ulps) and keeps the first whose table is the exact one in every
arithmetic of :data:`ARITHMETICS`, in the SIMD path and the scalar one. A channel with a
bias (ADQ's BatchNorm) is left alone: its bias pins the weight, and calibration snaps its
scale in the model instead (``adq_exact.snap``).
"""
from __future__ import annotations

import numpy as np

from .. import ir
from ..ir import Graph, Node, Tensor
from . import Pass, quantized_io

# The arithmetics a LiteRT file runs in (``reference.ARITHMETIC``); "pytorch" is the truth.
ARITHMETICS = ("litert-builtin", "litert-builtin-aarch64", "litert-xnnpack", "litert-xnnpack-aarch64")
ULPS = 16                      # float32 ulps the weight scale may move, each way (1e-6 of it)
SIMD = 8                       # the builtin depthwise kernels' SIMD block (arithmetic.litert)


def pointwise(graph: Graph, n: Node) -> bool:
    """A depthwise 1x1 int8 conv between quantized tensors: a per-channel map of levels."""
    if n.op != "conv" or not quantized_io(graph, n):
        return False
    a = n.attrs
    return a.storage == "int8" and tuple(a.kernel) == (1, 1) and a.depthwise(graph.tensor(n.inputs[0]).channels)


def tables(xt: Tensor, yt: Tensor, attrs: ir.Conv, arithmetics=("pytorch",) + ARITHMETICS) -> dict[str, np.ndarray]:
    """Per arithmetic, the conv's output ``[C, levels]`` for every input level of every channel."""
    from ..reference import ARITHMETIC

    c = attrs.c_out
    g = Graph({"x": Tensor("x", c, xt.scale, xt.zero_point, xt.qmin, xt.qmax),
               "y": Tensor("y", c, yt.scale, yt.zero_point, yt.qmin, yt.qmax)}, [], "x", "y", 1)
    node = Node("conv", ["x"], "y", attrs)
    q = np.arange(xt.qmin, xt.qmax + 1, dtype=np.int32)
    values = {"x": np.ascontiguousarray(np.broadcast_to(q, (1, c, 1, q.size)))}
    return {name: ARITHMETIC[name]["conv"](g, node, values)[0, :, 0, :] for name in arithmetics}


def exact_channels(xt: Tensor, yt: Tensor, attrs: ir.Conv) -> np.ndarray:
    """Per channel: whether every arithmetic of :data:`ARITHMETICS` computes the conv's own
    exact table on every level."""
    t = tables(xt, yt, attrs)
    want = t.pop("pytorch")
    return np.all([np.all(v == want, axis=1) for v in t.values()], axis=0)


def _as_conv(attrs: ir.Conv, w: np.ndarray, s: np.ndarray) -> ir.Conv:
    k = len(w)
    return attrs.replace(weight=w.astype(np.int8).reshape(k, 1, 1, 1), w_scale=s.astype(np.float32), bias=None,
                         groups=k)


def _exact_rows(xt: Tensor, yt: Tensor, attrs: ir.Conv, w: np.ndarray, s: np.ndarray, want: np.ndarray) -> np.ndarray:
    t = tables(xt, yt, _as_conv(attrs, w, s), ARITHMETICS)
    return np.all([np.all(v == want, axis=1) for v in t.values()], axis=0)


def candidates(w: int, s: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """(weights, scales) representing ``w * s``, nearest first: ``w`` itself with its scale
    moved by up to :data:`ULPS` ulps, then every other weight of its sign, largest first."""
    sign = 1 if w > 0 else -1
    wv = sign * np.array(sorted(range(1, 128), key=lambda v: (v != abs(w), -v)), np.int64)
    base = np.where(wv == w, s, (np.float64(s) * w / wv).astype(np.float32)).astype(np.float32)
    ulps = np.array(sorted(range(-ULPS, ULPS + 1), key=abs), np.int32)
    # positive float32s are ordered as their bit patterns
    scale = (base.view(np.int32)[:, None] + ulps[None, :]).astype(np.int32).view(np.float32)
    return np.repeat(wv, len(ulps)), scale.ravel()


def exact_representation(xt: Tensor, yt: Tensor, attrs: ir.Conv, w: int, s: np.float32):
    """A ``(weight, scale)`` for a bias-free channel ``(w, s)`` whose table is exact in every
    arithmetic and channel path, or None."""
    one = _as_conv(attrs, np.array([w]), np.array([s], np.float32))
    want = tables(xt, yt, one, ("pytorch",))["pytorch"][0]
    ws, ss = candidates(w, s)
    # all candidates at once as the channels of one conv in the SIMD path (a multiple of its
    # block), then the survivors as scalar-tail channels (fewer than a block at a time)
    pad = -len(ws) % SIMD
    ok = _exact_rows(xt, yt, attrs, np.concatenate([ws, ws[:pad]]), np.concatenate([ss, ss[:pad]]), want)[:len(ws)]
    ws, ss = ws[ok], ss[ok]
    for start in range(0, len(ws), SIMD - 1):
        part = slice(start, start + SIMD - 1)
        w1, s1 = ws[part], ss[part]
        if len(w1) == 1:  # a single-channel conv is not depthwise (it runs in ruy): two of it
            w1, s1 = np.repeat(w1, 2), np.repeat(s1, 2)
        ok = _exact_rows(xt, yt, attrs, w1, s1, want)
        if ok.any():
            i = start + int(np.argmax(ok))
            return int(ws[i]), np.float32(ss[i])
    return None


def _bias_free(a: ir.Conv) -> np.ndarray:
    return np.zeros(a.c_out, bool) if a.bias is not None and np.any(a.bias) else np.ones(a.c_out, bool)


def exact_pointwise(graph: Graph, n: Node, cache: dict) -> ir.Conv:
    """``n``'s attributes with every bias-free channel exact in every arithmetic."""
    xt, yt = graph.tensor(n.inputs[0]), graph.tensor(n.output)
    a = n.attrs
    w, s = a.weight.reshape(-1).astype(np.int64).copy(), a.w_scale.astype(np.float32).copy()
    free = _bias_free(a)
    grid = (xt.scale, xt.zero_point, xt.qmin, xt.qmax, yt.scale, yt.zero_point, yt.qmin, yt.qmax)
    for c in np.flatnonzero(free):
        key = grid + (int(w[c]), float(s[c]))
        if key not in cache:
            cache[key] = _checked(xt, yt, a, int(w[c]), s[c])
        if cache[key] is not None:
            w[c], s[c] = cache[key]
    if np.array_equal(w, a.weight.reshape(-1)) and np.array_equal(s, a.w_scale):
        return a
    return a.replace(weight=w.astype(np.int8).reshape(a.weight.shape), w_scale=s)


def _checked(xt, yt, attrs, w: int, s: np.float32):
    """``(w, s)`` itself where every arithmetic already computes it exactly, else a
    representation that does (or None)."""
    if np.all(_exact_rows(xt, yt, attrs, np.array([w] * SIMD + [w]), np.array([s] * (SIMD + 1), np.float32),
                          tables(xt, yt, _as_conv(attrs, np.array([w]), np.array([s], np.float32)),
                                 ("pytorch",))["pytorch"][0])):
        return w, s
    return exact_representation(xt, yt, attrs, w, s)


# A channel's answer depends only on its grids and (w, s): kept across exports of the same
# model (a test session, a search exporting its candidates), bounded.
_CACHE: dict = {}


def run(graph: Graph, options=None) -> Graph:
    if len(_CACHE) > 4096:
        _CACHE.clear()
    cache = _CACHE
    return graph.with_nodes([Node(n.op, n.inputs, n.output, exact_pointwise(graph, n, cache), n.name)
                             if pointwise(graph, n) else n for n in graph.nodes])


def inexact(graph: Graph) -> dict[str, int]:
    """Pointwise convs some LiteRT arithmetic computes otherwise than the exact one: name ->
    channels (a diagnostic: the export's hint, the tests)."""
    out = {}
    for n in graph.nodes:
        if pointwise(graph, n) and (bad := int((~exact_channels(graph.tensor(n.inputs[0]), graph.tensor(n.output),
                                                                 n.attrs)).sum())):
            out[n.name] = bad
    return out


PASS = Pass("pointwise_exact", run)
