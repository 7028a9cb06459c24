"""OpenVINO's CPU plugin on the ``openvino`` target's QDQ ONNX file, in numpy (x86 with
AVX512/AMX, f32 inference precision, static shapes: what ``runtimes/openvino.py`` compiles).

OpenVINO's ONNX frontend turns every QuantizeLinear onto a grid of scale ``s`` and zero
point ``z`` into a FakeQuantize with input range ``[s * (0 - z), s * (255 - z)]``
(``frontends/onnx/frontend/src/op/quantize_linear.cpp``). Its low-precision transformations
(LPT) move each dequantisation ``(q - z) * s`` past the operation that reads it and fold
scales into FakeQuantize ranges; the CPU plugin computes a FakeQuantize from
``isc = 255 / (ih - il)`` and ``ish = -il * 255 / (ih - il)`` in float32
(``intel_cpu/src/nodes/fake_quantize.cpp``) in one of three forms, set by what it is fused
into; rounding is half to even throughout. The kernels read those decisions from the graph,
as the plugin takes them (checked on every exported zoo entry, initialised and trained):

* A conv's own FakeQuantize, as oneDNN post-ops (``FakeQuantize::appendAttrPostOps``,
  ``dnnl_postops_composer_legacy.cpp``). A conv with a non-zero bias keeps its dequantisation
  (weight scales ``dq = s_in * s_w``, float bias ``b * dq``): ``float32(acc * dq) + b * dq`` meets
  the FakeQuantize on the real grid, per tensor: ``fma(v, isc, ish)`` (``eltwise_linear``). An
  all-zero bias is dropped and LPT folds ``dq`` into the range (``fake_quantize.cpp``
  ``fuseElementwise``: ``il / dq``): ``float32(acc * isc) + ish``, two roundings, ``isc`` per
  channel (binary mul). ``FakeQuantize::updateOptimizedFormula`` makes the shift per tensor
  where its channels agree within 5e-5 and drops it below 1e-5 of the range; a shift of 0 on
  the conv's last post-op becomes oneDNN's destination scale, applied as ``1 / (1 / isc)``.
  Identical identity convs (``requant_as_conv``) on one tensor onto several grids are merged
  into one conv whose float output each grid's FakeQuantize requantises on its own.
* In a Snippets subgraph (``snippets/src/pass/fq_decomposition.cpp``): every other
  FakeQuantize, ``round(min(max(x, il), ih) * isc - il * isc)``, three roundings.
* The add (``Sum`` of two DequantizeLinear): LPT ``AddTransformation``
  (``low_precision_transformations/src/add.cpp``) rewrites ``s1 (x1 - z1) + s2 (x2 - z2)`` as
  ``s2 ((x1 - z1') s1 / s2 + x2)``, ``z1' = z1 + z2 s2 / s1``, with ``s2`` folded into the
  output FakeQuantize and ``x1`` the input ``getNotEmpty`` picks
  (``eltwise_base_transformation.cpp``). In the add's subgraph the multiply and the sum are one
  fused multiply-add (``MulAddToFMA``); where the rescaled input is the copy of a conv output
  nothing else reads, or an add's or mul's output that the other input is computed from
  (``a + f(a)``), its ``(x1 - z1') s1 / s2`` runs in an Eltwise node of its own and the sum
  rounds apart. An add or mul read only by the next add's rescaled input is fused with it: that
  rescaling is folded into the first FakeQuantize's output range (LPT
  ``FuseSubtractToFakeQuantize``, ``FuseMultiplyToFakeQuantize``), ``fma(q, osc, osh)``.
* concat: each input's requantisation is the concat's FakeQuantize moved before the Concat
  (``MoveFakeQuantize``) with the input's dequantisation folded into its range, a post-op of
  the conv writing the input where that conv has no other reader, in a subgraph otherwise.
* sigmoid: a post-op of the conv writing its input when it is that conv's only reader and does
  not write the graph's output: the conv's FakeQuantize dequantises (``fma(q, osc, osh)``,
  ``ConvertQuantizeDequantize``), then oneDNN's logistic (``jit_uni_eltwise_injector``
  ``logistic_compute_vector_fwd``, ``exp`` by a degree-5 polynomial), then ``round(256 y)``.
* mul: the real values multiplied in float32 (a sigmoid's output is ``q / 256`` exactly), the
  output FakeQuantize on the real grid (a factor ``mult`` folded into its scale).

Data movement (depth-to-space, tile, max-pool, pad, crop) runs on the integers. Not modelled:
convs OpenVINO runs in float32 (weights stored as uint8 with zero point 128, which its int8
convs do not take, and packed INT4), whose sums depend on oneDNN's accumulation order; they
are computed as the exact arithmetic's, right but for rare ties.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, check_dispatch
from . import exact

F32 = np.float32
F64 = np.float64


def fma(a, b, c) -> np.ndarray:
    """float32 fused multiply-add with one rounding (``vfmadd``): the product is exact in
    float64 and the float64 sum is corrected where it lands on a float32 tie it did not reach."""
    a, b, c = (np.asarray(v, F32).astype(F64) for v in (a, b, c))
    p = a * b
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    r = s.astype(F32)
    d = s - r.astype(F64)
    gap = np.where(d > 0, np.nextafter(r, F32(np.inf)).astype(F64) - r, r - np.nextafter(r, F32(-np.inf)).astype(F64))
    tie = (np.abs(d) * 2 == gap) & (err != 0)
    if np.any(tie):
        s = np.where(tie, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(F32)


def quantize_range(t, mult: float = 1.0) -> tuple[F32, F32]:
    """The FakeQuantize input range of a QuantizeLinear onto ``t``'s 8-bit grid (a factor
    ``mult`` on the result is folded into the scale, as the serializer writes it)."""
    s = F32(t.scale) if mult == 1.0 else F32(F32(t.scale) / F32(mult))
    return F32(s * F32(F32(0) - F32(t.zero_point))), F32(s * F32(F32(255) - F32(t.zero_point)))


def dequantize_range(t, sub: F32, mul: F32) -> tuple[F32, F32]:
    """FakeQuantize output scale and shift after ``(y - sub) * mul`` is folded into its
    output range ``[0, 255]`` (LPT ``FuseSubtract``/``FuseMultiplyToFakeQuantize``, then
    ``outputScale = (oh - ol) / 255``, ``outputShift = ol``)."""
    ol = F32(F32(F32(0) - sub) * mul)
    oh = F32(F32(F32(255) - sub) * mul)
    return F32(F32(oh - ol) / F32(255)), ol


def scale_shift(il, ih):
    """``isc = 255 / (ih - il)``, ``ish = -il * 255 / (ih - il)`` in float32."""
    il, ih = np.asarray(il, F32), np.asarray(ih, F32)
    d = (ih - il).astype(F32)
    return (F32(255) / d).astype(F32), ((-il * F32(255)).astype(F32) / d).astype(F32)


def optimized_formula(il, ih, isc, ish):
    """``FakeQuantize::updateOptimizedFormula`` (output scale 1 and shift 0, as every
    QuantizeLinear onto uint8 has): (isc, ish, clo, chi), each of length 1 where per tensor."""
    isc = np.atleast_1d(isc).astype(F32)
    ish = np.atleast_1d(ish).astype(F32)
    il = np.broadcast_to(np.atleast_1d(il), isc.shape).astype(F32)
    ih = np.broadcast_to(np.atleast_1d(ih), isc.shape).astype(F32)
    if np.all(np.abs(ish - ish[0]) < F32(0.00005)):
        ish = np.full_like(ish, ish[0])
    clo = np.rint(((il * isc).astype(F32) + ish).astype(F32))
    chi = np.rint(((ih * isc).astype(F32) + ish).astype(F32))
    clo, chi = np.minimum(clo, chi), np.maximum(clo, chi)

    def shrink(v):
        return v[:1] if np.all(v == v[0]) else v
    isc, ish, clo, chi = shrink(isc), shrink(ish), shrink(clo), shrink(chi)
    if ish.size == 1 and clo.size == 1 and chi.size == 1 and abs(ish[0]) < (chi[0] - clo[0]) * F32(0.00001):
        ish = np.zeros(1, F32)
    return isc, ish, clo, chi


def _channels(v):
    v = np.asarray(v, F32)
    return v.reshape(1, -1, 1, 1) if v.size > 1 else v.reshape(())


def post_op_form(il, ih) -> tuple:
    """What a conv's fused FakeQuantize shares across its channels (:func:`optimized_formula`):
    the per-tensor shift where there is one, and which constants are per channel."""
    isc, ish, clo, chi = optimized_formula(il, ih, *scale_shift(il, ih))
    return isc.size, ish.size, clo.size, chi.size, float(ish[0]) if ish.size == 1 else None


def post_op_requantize(v, il, ih, last: bool, channel: int | None = None):
    """A FakeQuantize fused into a conv as oneDNN post-ops (``FakeQuantize::appendAttrPostOps``);
    ``channel``: ``v`` holds that channel only, requantised with the whole conv's constants."""
    isc, ish = scale_shift(il, ih)
    isc, ish, clo, chi = optimized_formula(il, ih, isc, ish)
    skip_round = last and clo.size == 1 and chi.size == 1 and clo[0] <= 0 and chi[0] >= 255
    per_tensor = isc.size == 1 and ish.size == 1
    if channel is not None:
        isc, ish, clo, chi = (x if x.size == 1 else x[channel:channel + 1] for x in (isc, ish, clo, chi))
    if per_tensor:
        if ish[0] != 0:
            y = fma(v, isc[0], ish[0])
        elif skip_round:  # destination scale 1 / isc, applied as its reciprocal
            y = (v * F32(F32(1) / F32(F32(1) / isc[0]))).astype(F32)
        else:
            y = (v * isc[0]).astype(F32)
    else:
        y = ((v * _channels(isc)).astype(F32) + _channels(ish)).astype(F32)
    q = np.rint(y)
    if not skip_round:
        q = np.minimum(np.maximum(q, _channels(clo)), _channels(chi))
    return np.clip(q, 0, 255)


def standalone_requantize(v, il, ih):
    """A FakeQuantize decomposed into a Snippets subgraph (``snippets/src/pass/fq_decomposition.cpp``):
    ``round(min(max(x, il), ih) * isc - il * isc)`` with ``isc = 255 / (ih - il)``, three roundings."""
    il, ih = np.asarray(il, F32), np.asarray(ih, F32)
    isc = (F32(255) / (ih - il).astype(F32)).astype(F32)
    ish = (il * isc).astype(F32)
    v = np.minimum(np.maximum(v, _channels(il)), _channels(ih))
    return np.clip(np.rint(((v * _channels(isc)).astype(F32) - _channels(ish)).astype(F32)), 0, 255)


def _clip(q, t):
    return np.clip(q, t.qmin, t.qmax).astype(np.int32)


def _only_consumer(graph: Graph, name: str) -> Node | None:
    if name == graph.output:
        return None
    c = graph.consumers(name)
    return c[0] if len(c) == 1 else None


def _fq_fused_after(graph: Graph, name: str) -> bool:
    """Whether a further FakeQuantize (or sigmoid) is fused after the one writing ``name``."""
    t = graph.tensor(name)
    if (t.qmin, t.qmax) != (0, 255):
        return True  # the uint8 Clip of a sub-8-bit grid
    c = _only_consumer(graph, name)
    if c is None:
        return False
    if c.op == "sigmoid":
        return True
    return c.op == "concat" and not t.same_grid(graph.tensor(c.output))


def _identity_key(node: Node):
    a = node.attrs
    return (node.inputs[0], a.weight.tobytes(), a.weight.shape, a.scaled_w_scale().tobytes(),
            None if a.bias is None else a.bias.tobytes(), a.stride, a.pad, a.dilation, a.groups)


def _merged_unfused(graph: Graph, node: Node) -> bool:
    """Identical convs on one tensor (merged by OpenVINO's common-subexpression pass) whose
    outputs lie on more than one grid: the merged conv keeps a float output."""
    key = _identity_key(node)
    grids = set()
    for n in graph.consumers(node.inputs[0]):
        if n.op == "conv" and n.attrs.storage == node.attrs.storage and _identity_key(n) == key:
            t = graph.tensor(n.output)
            grids.add((t.scale, t.zero_point))
    return len(grids) > 1


def keeps_dequantization(attrs) -> bool:
    """Whether the conv keeps its dequantisation: a non-zero bias stays an Add after the
    dequantising Multiply, and both are fused into the conv (oneDNN weight scales ``dq``, a
    float bias ``b * dq``), the FakeQuantize on the real grid; an all-zero bias is dropped
    and LPT folds ``dq`` into the FakeQuantize's range instead."""
    return attrs.bias is not None and bool(np.any(attrs.bias != 0))


def conv(graph, node, values):
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    a = node.attrs
    if not (xt.quantized and yt.quantized) or a.storage == "int4":
        return exact.KERNELS["conv"](graph, node, values)
    acc = exact.accumulate(graph, node, values) - a.bias_or_zeros().astype(np.int64).reshape(1, -1, 1, 1)
    return requantize_conv(acc, xt, yt, a, last=not _fq_fused_after(graph, node.output),
                           merged=_merged_unfused(graph, node))


def requantize_conv(acc, xt, yt, a, last: bool = True, merged: bool = False,
                    channel: int | None = None) -> np.ndarray:
    """A quantized int8 conv's accumulator without its bias (``[N, C, H, W]`` integers) as the
    plugin requantises it onto ``yt``: ``last`` where no further FakeQuantize is fused after
    the conv's, ``merged`` for identical convs merged onto several grids (module docstring);
    ``channel``: ``acc`` holds that output channel only (``[N, 1, H, W]``), ``a`` the whole conv."""
    v = acc.astype(F32)
    dq = (F32(xt.scale) * a.scaled_w_scale()).astype(F32)
    il, ih = quantize_range(yt)

    def pick(x):
        return x if channel is None else x[channel:channel + 1]
    if keeps_dequantization(a):
        bias = (a.bias_or_zeros().astype(F32) * dq).astype(F32)
        v = ((v * _channels(pick(dq))).astype(F32) + _channels(pick(bias))).astype(F32)
        return _clip(post_op_requantize(v, il, ih, last), yt)
    il_c, ih_c = (il / dq).astype(F32), (ih / dq).astype(F32)
    if merged:
        return _clip(standalone_requantize(v, pick(il_c), pick(ih_c)), yt)
    return _clip(post_op_requantize(v, il_c, ih_c, last, channel), yt)


_FQ_WRITERS = ("conv", "add", "mul", "concat", "sigmoid", "requant", "float_conv")


def _from_fake_quantize(graph, name) -> bool:
    p = graph.producer(name)
    t = graph.tensor(name)
    return p is not None and p.op in _FQ_WRITERS and (t.qmin, t.qmax) == (0, 255)


def full_path(graph, node) -> int:
    """LPT ``EltwiseBaseTransformation::getNotEmpty``: the input the add rescales (the
    other enters with its raw integers)."""
    i0, i1 = node.inputs
    f0, f1 = _from_fake_quantize(graph, i0), _from_fake_quantize(graph, i1)
    if f0 != f1:
        return 0 if f0 else 1
    c0, c1 = len(graph.consumers(i0)), len(graph.consumers(i1))
    if c0 > 1 and c1 == 1:
        return 1
    return 0


def _chained(graph, name, node) -> bool:
    """Whether the Eltwise writing ``name`` is fused with ``node`` (its only consumer)."""
    p = graph.producer(name)
    return p is not None and p.op in ("add", "mul") and _only_consumer(graph, name) is node \
        and (graph.tensor(name).qmin, graph.tensor(name).qmax) == (0, 255)


def _rescaled_apart(graph, name, node) -> bool:
    """Whether the rescaled branch's ``(x - z') * s1 / s2`` runs in an Eltwise node of its own
    (then the sum is a separate rounding), not in the Snippets subgraph of the add, where
    the multiply and the add become one fused multiply-add (``MulAddToFMA``): the branch is
    the copy of a conv output nothing else reads; or it is an add's or mul's output that
    the add's other input is computed from (a residual ``a + f(a)``: the rescaling joins
    the subgraph that writes ``a``, and the sum cannot without a cycle through ``f``)."""
    p = graph.producer(name)
    if p is not None and p.op == "max_pool" and len(graph.consumers(p.inputs[0])) == 1:
        return True
    other = node.inputs[1] if node.inputs[0] == name else node.inputs[0]
    return p is not None and p.op in ("add", "mul") and name in _ancestors(graph, other)


def _ancestors(graph, name) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        p = graph.producer(todo.pop())
        if p is not None:
            new = [i for i in p.inputs if i not in seen]
            seen.update(new)
            todo += new
    return seen


def add_form(graph, node) -> tuple[int, str]:
    """How OpenVINO computes add ``node`` in ``graph``: the input it rescales (:func:`full_path`)
    and the form of the rescaled sum: ``"chained"`` (folded into the FakeQuantize writing that
    input), ``"apart"`` (an Eltwise of its own) or ``"fma"`` (one fused multiply-add)."""
    f = full_path(graph, node)
    nf = node.inputs[f]
    if _chained(graph, nf, node):
        return f, "chained"
    return f, "apart" if _rescaled_apart(graph, nf, node) else "fma"


def add_values(tf, te, tc, xf, xe, form: str, mult: float = 1.0) -> np.ndarray:
    """The add of ``xf`` on grid ``tf`` (the rescaled input) and ``xe`` on ``te`` onto ``tc``,
    in form ``form`` (:func:`add_form`): LPT's ``se ((xf - z') sf / se + xe)``."""
    sf, se = F32(tf.scale), F32(te.scale)
    sub = F32(F32(tf.zero_point) + F32(F32(F32(te.zero_point) * se) / sf))
    mul = F32(sf / se)
    xf, xe = np.asarray(xf).astype(F32), np.asarray(xe).astype(F32)
    if form == "chained":
        osc, osh = dequantize_range(tf, sub, mul)
        u = (fma(xf, osc, osh) + xe).astype(F32)
    elif form == "apart":
        u = ((((xf - sub).astype(F32) * mul).astype(F32)) + xe).astype(F32)
    else:
        u = fma((xf - sub).astype(F32), mul, xe)
    il, ih = quantize_range(tc, mult)
    return _clip(standalone_requantize(u, F32(il / se), F32(ih / se)), tc)


def add(graph, node, values):
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized):
        return exact.KERNELS["add"](graph, node, values)
    f, form = add_form(graph, node)
    nf, ne = node.inputs[f], node.inputs[1 - f]
    return add_values(graph.tensor(nf), graph.tensor(ne), tc, values[nf], values[ne], form, node.attrs.mult)


def sigmoid_written(graph, name) -> bool:
    """Whether quantized tensor ``name`` is a sigmoid's output, whose FakeQuantize dequantises
    (an Eltwise then reads ``fma(q, osc, osh)``, not ``(q - z) * s``)."""
    p = graph.producer(name)
    return p is not None and p.op == "sigmoid"


def _dequantized(t, q, sigmoid_out: bool):
    """The real values an Eltwise reads for quantized tensor ``t`` holding ``q``: ``(q - z) * s``,
    or ``fma(q, osc, osh)`` where the writing FakeQuantize dequantises (a sigmoid's output)."""
    q = np.asarray(q).astype(F32)
    if sigmoid_out:
        osc, osh = dequantize_range(t, F32(t.zero_point), F32(t.scale))
        return fma(q, osc, osh)
    return ((q - F32(t.zero_point)).astype(F32) * F32(t.scale)).astype(F32)


def mul_values(ta, tb, tc, xa, xb, sigmoid_out: tuple[bool, bool], mult: float = 1.0) -> np.ndarray:
    """The mul of ``xa`` on ``ta`` and ``xb`` on ``tb`` onto ``tc`` (times ``mult``):
    ``sigmoid_out`` says which input a sigmoid writes (:func:`sigmoid_written`)."""
    v = (_dequantized(ta, xa, sigmoid_out[0]) * _dequantized(tb, xb, sigmoid_out[1])).astype(F32)
    il, ih = quantize_range(tc, mult)
    return _clip(standalone_requantize(v, il, ih), tc)


def mul(graph, node, values):
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if not (ta.quantized and tb.quantized and tc.quantized):
        return exact.KERNELS["mul"](graph, node, values)
    a, b = node.inputs
    return mul_values(ta, tb, tc, values[a], values[b], (sigmoid_written(graph, a), sigmoid_written(graph, b)),
                      node.attrs.mult)


# oneDNN's exp (jit_uni_eltwise_injector exp_compute_vector_fwd), float32 bit patterns
_EXP_LN_FLT_MAX = np.array(0x42B17218, np.uint32).view(F32)
_EXP_LN_FLT_MIN = np.array(0xC2AEAC50, np.uint32).view(F32)
_LOG2E = np.array(0x3FB8AA3B, np.uint32).view(F32)
_LN2 = np.array(0x3F317218, np.uint32).view(F32)
_EXP_POL = [np.array(v, np.uint32).view(F32) for v in (0x3F7FFFFB, 0x3EFFFEE3, 0x3E2AAD40, 0x3D2B9D0D, 0x3C07CFCE)]


def onednn_exp(x):
    x = np.asarray(x, F32)
    zero = x < _EXP_LN_FLT_MIN
    x = np.maximum(np.minimum(x, _EXP_LN_FLT_MAX), _EXP_LN_FLT_MIN)
    fx = np.floor((x * _LOG2E).astype(F32) + F32(0.5)).astype(F32)
    r = fma(-fx, _LN2, x)                                   # vfnmadd231ps
    n = (fx - F32(1)).astype(F32)
    pow2 = ((np.rint(n).astype(np.int32) + 127) << 23).astype(np.uint32).view(F32)
    pow2 = np.where(zero, F32(0), pow2)
    p = np.full_like(x, _EXP_POL[4])
    for c in (_EXP_POL[3], _EXP_POL[2], _EXP_POL[1], _EXP_POL[0], F32(1)):
        p = fma(p, r, c)
    return ((p * pow2).astype(F32) * F32(2)).astype(F32)


def onednn_logistic(x):
    """``logistic_compute_vector_fwd``: ``e = exp(-|x|)``, ``e / (e + 1)``, mirrored for x > 0."""
    x = np.asarray(x, F32)
    negative = np.signbit(x)
    e = onednn_exp(-np.abs(x))
    y = (e / (e + F32(1)).astype(F32)).astype(F32)
    return np.where(negative, y, (F32(1) - y).astype(F32))


def sigmoid_fused(graph, node) -> bool:
    """Whether the sigmoid runs as a post-op of the conv writing its input (that conv's only
    reader), after the conv's FakeQuantize made dequantising (``ConvertQuantizeDequantize``);
    a sigmoid writing the graph's output runs in a Snippets subgraph on ``(q - z) * s``."""
    p = graph.producer(node.inputs[0])
    return p is not None and p.op == "conv" and _only_consumer(graph, node.inputs[0]) is node \
        and node.output != graph.output


def sigmoid(graph, node, values):
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    if not (xt.quantized and yt.quantized):
        return exact.KERNELS["sigmoid"](graph, node, values)
    q = values[node.inputs[0]].astype(F32)
    if sigmoid_fused(graph, node):
        osc, osh = dequantize_range(xt, F32(xt.zero_point), F32(xt.scale))
        v = fma(q, osc, osh)
    else:
        v = ((q - F32(xt.zero_point)).astype(F32) * F32(xt.scale)).astype(F32)
    il, ih = quantize_range(yt)
    return _clip(standalone_requantize(onednn_logistic(v), il, ih), yt)


def concat(graph, node, values):
    yt = graph.tensor(node.output)
    il, ih = quantize_range(yt)
    parts = []
    for name in node.inputs:
        t, q = graph.tensor(name), values[name]
        if not t.quantized or not yt.quantized:
            parts.append(exact.quantize(yt, exact.real(t, q)))
            continue
        if t.same_grid(yt):
            parts.append(q)
            continue
        s, z = F32(t.scale), F32(t.zero_point)
        il_i, ih_i = F32(F32(il / s) + z), F32(F32(ih / s) + z)
        p = graph.producer(name)
        fused = p is not None and p.op == "conv" and _only_consumer(graph, name) is node \
            and (t.qmin, t.qmax) == (0, 255)
        qf = q.astype(F32)
        y = post_op_requantize(qf, il_i, ih_i, True) if fused else standalone_requantize(qf, il_i, ih_i)
        parts.append(_clip(y, yt))
    return np.concatenate(parts, axis=1)


KERNELS = {**exact.KERNELS, "conv": conv, "add": add, "mul": mul, "sigmoid": sigmoid, "concat": concat}
check_dispatch(KERNELS, "OpenVINO arithmetic")
