"""Every depthwise 1x1 conv (an identity requantisation, an ADQ BatchNorm) re-represented
so that each LiteRT kernel computes it exactly.

LiteRT's builtin DEPTHWISE_CONV_2D requantises in two roundings (gemmlowp
``SaturatingRoundingDoublingHighMul``, then ``RoundingDivideByPOT``; ties upward in its SIMD
channel blocks, the scalar routine for the rest), on x86 and aarch64 alike, so the few input
levels whose exact result lies just below a rounding boundary come out one step off, even
after ``widen``. On aarch64 that is all of builtin's distance to PyTorch on the shipped
basic_lrtail_bicubic (``benchmarks/results/builtin_rounding.md``: 0.018 dB, its full convs
run in ruy and round once there).

Such a conv maps each channel's ``qmax - qmin + 1`` input levels, so the fix is checked, not
hoped for: for each distinct channel ``(w, s, b)`` whose table some LiteRT arithmetic
computes otherwise than the exact one, the pass tries other representations and keeps the
first whose table is the channel's exact one in every arithmetic of :data:`ARITHMETICS`
(and the exact arithmetic itself), in the SIMD path and the scalar one:

1. the same real map: an integer weight ``w'`` of the same sign with scale ``s w / w'`` and
   bias ``b w' / w`` (where that is an integer: always for a requantisation, which has no
   bias), the scale moved by up to :data:`ULPS` float32 ulps;
2. then the bias ``b w' / w`` rounded and moved by up to :data:`NUDGE` accumulator units: a
   level whose exact result lies closer to a tie than the first rounding's quantum (no
   weight of step 1 reaches it) is moved away from the tie, by less than the other levels'
   distances to theirs;
3. then, for the weight itself, the scale tilted by up to :data:`SWEEP` steps of
   :data:`SWEEP_STEP` together with a bias moved by up to ``NUDGE // 4``.

A BatchNorm's bias pins its weight (step 1 is the weight itself), and calibration has
already moved it to an exact neighbour where one exists (``adq_exact.snap``); steps 2 and 3
find most of the rest (the shipped models: 4 of the 7 BatchNorm channels calibration left
inexact in basic_lrtail_bicubic, 1 of RFDN's 2, and the 48 channels of RFDN's one identity
requantisation that no weight made exact).

Some channels have no such representation: levels whose exact results lie near ties on both
sides (a briefly trained basic_w4a4's BatchNorms: one level 0.003 steps below a tie, where the
builtin's window is 2^-7 steps wide, and another 0.001 above one, 59 levels away, so no tilt
of the map moves the first out without moving the second across). Such a conv is written as
a dense 1x1 conv, its weights on the diagonal (:func:`dense_where_exacter`), where that makes
more channels exact on aarch64 and none fewer anywhere: aarch64 runs a conv in ruy, which
rounds once, and x86 in ruy's two roundings, which are those of the depthwise kernel's SIMD
blocks. It costs ``C`` times the MACs of that layer (a ninth of a 3x3 conv's of as many
channels), in XNNPACK too, which is exact either way: the ``litert-xnnpack`` file is made to be
as exact as it can be in the builtin kernels as well, like every other LiteRT pass.

The ``openvino`` target runs the same pass in OpenVINO's arithmetic (:data:`OPENVINO_PASS`):
its CPU plugin requantises a BatchNorm conv (non-zero bias) as ``fma(f32(f32(acc dq) + b dq),
isc, ish)`` and a requantisation as ``f32(acc isc') + ish`` (``arithmetic.openvino.conv``), two
or three roundings, which the trained RFDN met on 0.03% of one BatchNorm's values. Its form
depends on what reads the conv (a FakeQuantize fused after it), so the table is computed in
that context (:class:`Check`); a conv OpenVINO merges with an identical one onto another grid
is left as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import ir
from ..ir import Graph, Node, Tensor
from . import Pass, quantized_io

# The arithmetics a LiteRT file runs in (``reference.ARITHMETIC``); "pytorch" is the truth.
ARITHMETICS = ("litert-builtin", "litert-builtin-aarch64", "litert-xnnpack", "litert-xnnpack-aarch64")
ULPS = 16                      # float32 ulps the weight scale may move, each way (1e-6 of it)
NUDGE = 16                     # accumulator units a bias may move, each way
SWEEP, SWEEP_STEP = 64, 2.0**-16   # step 3: the scale moved by up to 64 steps of 2^-16 (0.1%), each way
SIMD = 8                       # the builtin depthwise kernels' SIMD block (arithmetic.litert)


@dataclass(frozen=True)
class Check:
    """The arithmetics a channel's table must be exact in (besides ``pytorch``, the truth),
    in the order candidates are sieved (the one that rejects most first), and the conv's
    context where the arithmetic depends on it: OpenVINO fuses a further FakeQuantize
    after the conv (``arithmetic.openvino._fq_fused_after``)."""
    arithmetics: tuple[str, ...] = ARITHMETICS
    fused_after: bool = False
    dense: bool = False       # the channel of a dense conv (:func:`dense_where_exacter`)

    @property
    def simd(self) -> bool:
        """Whether a channel's path depends on its place (LiteRT builtin's SIMD blocks)."""
        return not self.dense and any(a.startswith("litert-builtin") for a in self.arithmetics)

    @property
    def sieve(self) -> tuple[str, ...]:
        return self.arithmetics[:2] + ("pytorch",) + self.arithmetics[2:]


LITERT = Check()


def pointwise(graph: Graph, n: Node) -> bool:
    """A depthwise 1x1 int8 conv between quantized tensors: a per-channel map of levels."""
    if n.op != "conv" or not quantized_io(graph, n):
        return False
    a = n.attrs
    return a.storage == "int8" and tuple(a.kernel) == (1, 1) and a.depthwise(graph.tensor(n.inputs[0]).channels)


def diagonal(graph: Graph, n: Node) -> bool:
    """A depthwise 1x1 int8 conv written dense (:func:`dense_where_exacter`): still a
    per-channel map of levels, which :func:`tables` computes as it is."""
    if n.op != "conv" or not quantized_io(graph, n):
        return False
    a = n.attrs
    w = a.weight.reshape(a.c_out, -1)
    return a.storage == "int8" and tuple(a.kernel) == (1, 1) and a.groups == 1 and w.shape[0] == w.shape[1] > 1 \
        and not np.any(w - np.diag(np.diag(w)))


def dense_where_exacter(xt: Tensor, yt: Tensor, attrs: ir.Conv) -> ir.Conv:
    """``attrs`` (a depthwise 1x1 conv) as a dense 1x1 conv where that makes more channels
    exact in aarch64 LiteRT builtin and none fewer in any arithmetic of :data:`ARITHMETICS`."""
    from .dense import dense

    want = tables(xt, yt, attrs, ("pytorch",))["pytorch"]

    def exact(a):
        return {k: np.all(v == want, axis=1) for k, v in tables(xt, yt, a).items()}
    ok, arm = exact(attrs), "litert-builtin-aarch64"
    if ok[arm].all():
        return attrs
    moved = attrs
    lost = np.flatnonzero(np.any([ok[k] & ~v for k, v in exact(dense(attrs)).items()], axis=0))
    if lost.size:  # another representation, checked as a dense conv's channel
        w, s, b = _channels(attrs)
        for c in lost:
            need = tuple(k for k in ARITHMETICS if ok[k][c] or k == arm)
            found = exact_representation(xt, yt, attrs, int(w[c]), s[c], int(b[c]), scalar=False,
                                         check=Check(need, dense=True))
            if found is not None:
                w[c], s[c], b[c] = found
        moved = _with(attrs, w, s, b)
    ok_dense = exact(dense(moved))
    if ok_dense[arm].sum() <= ok[arm].sum() or any((ok[k] & ~ok_dense[k]).any() for k in ok):
        return attrs
    return dense(moved)


def _channels(a: ir.Conv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A depthwise 1x1 conv's per-channel (weight, scale, bias), as copies."""
    return (a.weight.reshape(-1).astype(np.int64).copy(), a.w_scale.astype(np.float32).copy(),
            a.bias_or_zeros().astype(np.int64).copy())


def _with(a: ir.Conv, w: np.ndarray, s: np.ndarray, b: np.ndarray) -> ir.Conv:
    return a.replace(weight=w.astype(np.int8).reshape(a.weight.shape), w_scale=s,
                     bias=b.astype(np.int32) if a.bias is not None or np.any(b) else None)


def tables(xt: Tensor, yt: Tensor, attrs: ir.Conv, arithmetics=("pytorch",) + ARITHMETICS,
           fused_after: bool = False, dense: bool = False) -> dict[str, np.ndarray]:
    """Per arithmetic, the conv's output ``[C, levels]`` for every input level of every channel
    (``fused_after``: with a FakeQuantize fused after it, a sigmoid standing for it; ``dense``:
    ``attrs`` is a conv of one input channel, ``[C, 1, 1, 1]`` with one group, whose output
    channels each requantise as a dense conv's)."""
    from ..reference import ARITHMETIC

    c = attrs.c_out
    c_in = 1 if dense else c
    tensors = {"x": Tensor("x", c_in, xt.scale, xt.zero_point, xt.qmin, xt.qmax),
               "y": Tensor("y", c, yt.scale, yt.zero_point, yt.qmin, yt.qmax)}
    after = []
    if fused_after:
        tensors["z"] = Tensor("z", c, 1 / 256, 0, 0, 255)
        after = [Node("sigmoid", ["y"], "z", ir.Sigmoid())]
    g = Graph(tensors, after, "x", "z" if fused_after else "y", 1)
    node = Node("conv", ["x"], "y", attrs)
    q = np.arange(xt.qmin, xt.qmax + 1, dtype=np.int32)
    values = {"x": np.ascontiguousarray(np.broadcast_to(q, (1, c_in, 1, q.size)))}
    return {name: ARITHMETIC[name]["conv"](g, node, values)[0, :, 0, :] for name in arithmetics}


def exact_channels(xt: Tensor, yt: Tensor, attrs: ir.Conv, check: Check = LITERT) -> np.ndarray:
    """Per channel: whether every arithmetic of ``check`` computes the conv's own exact
    table on every level."""
    t = tables(xt, yt, attrs, ("pytorch",) + check.arithmetics, check.fused_after, check.dense)
    want = t.pop("pytorch")
    return np.all([np.all(v == want, axis=1) for v in t.values()], axis=0)


def _as_conv(attrs: ir.Conv, w: np.ndarray, s: np.ndarray, b: np.ndarray | None = None,
             dense: bool = False) -> ir.Conv:
    k = len(w)
    bias = None if b is None or not np.any(b) else np.asarray(b).astype(np.int32)
    return attrs.replace(weight=w.astype(np.int8).reshape(k, 1, 1, 1), w_scale=s.astype(np.float32), bias=bias,
                         groups=1 if dense else k)


def _exact_rows(xt: Tensor, yt: Tensor, attrs: ir.Conv, w: np.ndarray, s: np.ndarray, b: np.ndarray,
                want: np.ndarray, check: Check) -> np.ndarray:
    t = tables(xt, yt, _as_conv(attrs, w, s, b, check.dense), ("pytorch",) + check.arithmetics, check.fused_after,
               check.dense)
    return np.all([np.all(v == want, axis=1) for v in t.values()], axis=0)


def _scales(base: np.ndarray, ulps: int) -> np.ndarray:
    """``[len(base), 2 ulps + 1]``: each positive float32 scale moved by up to ``ulps``, nearest first."""
    steps = np.array(sorted(range(-ulps, ulps + 1), key=abs), np.int32)
    # positive float32s are ordered as their bit patterns
    return (base.astype(np.float32).view(np.int32)[:, None] + steps[None, :]).astype(np.int32).view(np.float32)


def _weights(w: int) -> np.ndarray:
    """Every int8 weight of ``w``'s sign: ``w`` first, then largest first."""
    sign = 1 if w > 0 else -1
    return sign * np.array(sorted(range(1, 128), key=lambda v: (v != abs(w), -v)), np.int64)


def _same_map_scale(wv: np.ndarray, w: int, s: np.float32) -> np.ndarray:
    """The float32 scale of each weight ``w'`` of ``wv`` for the product ``w * s`` (``s`` for ``w``)."""
    return np.where(wv == w, s, (np.float64(s) * w / wv).astype(np.float32)).astype(np.float32)


def candidates(w: int, s: np.float32, b: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1 (module docstring): ``(weights, scales, biases)`` representing ``w * s`` and ``b``,
    nearest first: ``w`` itself with its scale moved by up to :data:`ULPS` ulps, then every
    other weight of its sign, largest first, whose bias ``b w' / w`` is an integer."""
    wv = _weights(w)
    wv = wv[(b * wv) % w == 0]
    scale = _scales(_same_map_scale(wv, w, s), ULPS)
    return np.repeat(wv, scale.shape[1]), scale.ravel(), np.repeat(b * wv // w, scale.shape[1])


def nudges(w: int, s: np.float32, b: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2: every weight of ``w``'s sign (``w`` first, then largest first) with the scale
    of step 1 and the bias ``b w' / w`` rounded, then moved by up to :data:`NUDGE`, nearest
    first (the rounding alone shifts the map by a fraction of a bias unit)."""
    wv = _weights(w)
    base = _same_map_scale(wv, w, s)
    d = np.array(sorted(range(-NUDGE, NUDGE + 1), key=lambda v: (abs(v), v)), np.int64)
    bias = np.rint(b * wv.astype(np.float64) / w).astype(np.int64)[:, None] + d[None, :]
    keep = (np.abs(bias) < 2**31) & ((bias * w != b * wv[:, None]) | (d[None, :] != 0))  # not step 1's
    return (np.repeat(wv, len(d)).reshape(bias.shape)[keep], np.repeat(base, len(d)).reshape(bias.shape)[keep],
            bias[keep])


def sweeps(w: int, s: np.float32, b: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 3: ``w`` itself with its scale moved by up to ``SWEEP`` steps of ``SWEEP_STEP``
    (relative) and its bias by up to ``NUDGE // 4``, nearest first: a tilt and a shift of
    the map together, finer than the bias's unit alone (one output step times ``M``)."""
    k = np.array(sorted(range(-SWEEP, SWEEP + 1), key=abs), np.float64)
    d = np.array(sorted(range(-(NUDGE // 4), NUDGE // 4 + 1), key=abs), np.int64)
    scale = (np.float64(s) * (1 + k * SWEEP_STEP)).astype(np.float32)
    return np.full(len(k) * len(d), w), np.repeat(scale, len(d)), np.tile(b + d, len(k))


def _first_exact(xt: Tensor, yt: Tensor, attrs: ir.Conv, ws, ss, bs, want, scalar: bool = True,
                 check: Check = LITERT):
    """The first candidate whose table is ``want`` in every arithmetic, in the SIMD channel
    path and (``scalar``) the scalar one, or None."""
    # all candidates at once as the channels of one conv in the SIMD path (a multiple of its
    # block; the arithmetic that rejects most first, each on the survivors of the last), then
    # the survivors as scalar-tail channels (fewer than a block at a time)
    keep = np.arange(len(ws))
    for name in check.sieve:
        lay = np.resize(keep, len(keep) + -len(keep) % SIMD)  # repeated to whole blocks
        t = tables(xt, yt, _as_conv(attrs, ws[lay], ss[lay], bs[lay], check.dense), (name,), check.fused_after,
                   check.dense)[name][:len(keep)]
        keep = keep[np.all(t == want, axis=1)]
        if not len(keep):
            return None
    ws, ss, bs = ws[keep], ss[keep], bs[keep]
    if not (scalar and check.simd):
        return (int(ws[0]), np.float32(ss[0]), int(bs[0])) if len(ws) else None
    for start in range(0, len(ws), SIMD - 1):
        part = slice(start, start + SIMD - 1)
        w1, s1, b1 = ws[part], ss[part], bs[part]
        if len(w1) == 1:  # a single-channel conv is not depthwise (it runs in ruy): two of it
            w1, s1, b1 = np.repeat(w1, 2), np.repeat(s1, 2), np.repeat(b1, 2)
        ok = _exact_rows(xt, yt, attrs, w1, s1, b1, want, check)
        if ok.any():
            i = start + int(np.argmax(ok))
            return int(ws[i]), np.float32(ss[i]), int(bs[i])
    return None


def exact_representation(xt: Tensor, yt: Tensor, attrs: ir.Conv, w: int, s: np.float32, b: int = 0,
                         scalar: bool = True, check: Check = LITERT):
    """A ``(weight, scale, bias)`` for the channel ``(w, s, b)`` whose table is exact in every
    arithmetic of ``check``, in the SIMD channel path and (``scalar``) the scalar one, or None."""
    one = _as_conv(attrs, np.array([w]), np.array([s], np.float32), np.array([b]), check.dense)
    want = tables(xt, yt, one, ("pytorch",), dense=check.dense)["pytorch"][0]
    for ws, ss, bs in (candidates(w, s, b), nudges(w, s, b), sweeps(w, s, b)):
        found = _first_exact(xt, yt, attrs, ws, ss, bs, want, scalar, check)
        if found is not None:
            return found
    return None


def exact_pointwise(graph: Graph, n: Node, cache: dict, check: Check = LITERT) -> ir.Conv:
    """``n``'s attributes with every channel exact in every arithmetic of ``check`` (where
    some representation is)."""
    xt, yt = graph.tensor(n.inputs[0]), graph.tensor(n.output)
    a = n.attrs
    ok = exact_channels(xt, yt, a, check)  # as laid out: SIMD blocks, then the scalar tail
    if ok.all():
        return a
    w, s, b = _channels(a)
    grid = (xt.scale, xt.zero_point, xt.qmin, xt.qmax, yt.scale, yt.zero_point, yt.qmin, yt.qmax)
    simd = a.c_out - a.c_out % SIMD if check.simd else 0  # channels below run in builtin's SIMD blocks only
    for c in np.flatnonzero(~ok):
        key = grid + (int(w[c]), float(s[c]), int(b[c]), bool(c >= simd), check)
        if key not in cache:
            cache[key] = exact_representation(xt, yt, a, int(w[c]), s[c], int(b[c]), bool(c >= simd), check)
        if cache[key] is not None:
            w[c], s[c], b[c] = cache[key]
    return _with(a, w, s, b)


# A channel's answer depends only on its grids and (w, s): kept across exports of the same
# model (a test session, a search exporting its candidates), bounded.
_CACHE: dict = {}


def check_of(graph: Graph, n: Node, arithmetics: tuple[str, ...]) -> Check | None:
    """The :class:`Check` of pointwise conv ``n`` in ``arithmetics``, or None where it is left
    as it is (a conv OpenVINO merges with an identical one writing another grid)."""
    if "openvino" not in arithmetics:
        return Check(arithmetics)
    from ..arithmetic import openvino

    if openvino._merged_unfused(graph, n):
        return None
    return Check(arithmetics, openvino._fq_fused_after(graph, n.output))


def run(graph: Graph, options=None, arithmetics: tuple[str, ...] = ARITHMETICS) -> Graph:
    if len(_CACHE) > 4096:
        _CACHE.clear()
    litert = arithmetics == ARITHMETICS
    nodes = []
    for n in graph.nodes:
        if pointwise(graph, n) and (check := check_of(graph, n, arithmetics)) is not None:
            attrs = exact_pointwise(graph, n, _CACHE, check)
            if litert:
                attrs = dense_where_exacter(graph.tensor(n.inputs[0]), graph.tensor(n.output), attrs)
            n = Node(n.op, n.inputs, n.output, attrs, n.name)
        nodes.append(n)
    return graph.with_nodes(nodes)


def inexact(graph: Graph, arithmetics: tuple[str, ...] = ARITHMETICS) -> dict[str, int]:
    """Pointwise convs some arithmetic of ``arithmetics`` (LiteRT's by default) computes
    otherwise than the exact one: name -> channels (a diagnostic: the export's hint, the tests)."""
    out = {}
    for n in graph.nodes:
        if (pointwise(graph, n) or diagonal(graph, n)) and (check := check_of(graph, n, arithmetics)) is not None and \
                (bad := int((~exact_channels(graph.tensor(n.inputs[0]), graph.tensor(n.output), n.attrs,
                                             check)).sum())):
            out[n.name] = bad
    return out


PASS = Pass("pointwise_exact", run)
OPENVINO_PASS = Pass("pointwise_exact_openvino", partial(run, arithmetics=("openvino",)))
