"""Tensor scales chosen so that every runtime's int8 ADD equals the exact one on every input.

The trained model (and onnxruntime, whose quantized adds are float ``Sum`` islands) adds
two int8 tensors exactly: ``rint((s_a (a - z_a) + s_b (b - z_b)) / s_c)`` in float32.
XNNPACK's ADD does not: it turns the scale ratios ``s_a / s_c`` and ``s_b / s_c`` into
integers with 20 significant bits and one shared shift (``arithmetic.litert.add_xnnpack``),
so an input pair whose exact sum lies within about ``255 * 2^-20`` steps of a rounding
boundary rounds the other way. For a typical add that is 0 to 5 of the 65536 possible
input pairs, and a network only has to meet one of them in an image: RFDN's trained
``block.3.out`` met it on 0.01% of its values, and ESA's sigmoid mask spread it to
0.065 dB.

An add has only 65536 input pairs, so the fix is checked, not hoped for: after
calibration, each quantized add whose output scale is free gets the nearest scale (a few
parts per million away) at which every kernel in :data:`KERNELS` equals the exact
arithmetic on all pairs; an add that writes a fixed grid (the network's output, 1/255)
moves one of its conv-written inputs instead. The model holds the moved scale, so PyTorch,
the numpy reference and every runtime compute the same new grid; the accuracy cost is
nil (the grid moves by ``2^-21`` of a step per step of the search).

OpenVINO adds otherwise again: its low-precision transformations rewrite
``s1 (x1 - z1) + s2 (x2 - z2)`` as ``s2 ((x1 - z1') s1 / s2 + x2)`` in float32, in a form
the ``openvino`` target's file decides (``arithmetic.openvino.add_form``), which rounds one or
two of the 65536 pairs of a trained RFDN add otherwise; its ``block.0.r1`` met one on 320
values of two Set5 images. So each add is checked in that form too (:func:`openvino_forms`).

Multiplies (RFDN's ESA mask, ``x * sigmoid(m)``) are fixed the same way, for another reason:
LiteRT's builtin int8 MUL requantises the integer product ``p`` in two roundings on every
CPU (``MultiplyByQuantizedMultiplier``: a rounding high multiply by the 31-bit significand
``q`` of the scale ratio, then a rounding right shift by ``s``), so a product with ``p q`` in
the half unit just below a midpoint ``2^s k + 2^(s-1)`` is rounded up where the exact
product rounds down: about ``2^-(s+1)`` of all pairs (0.3-0.4% on RFDN's muls, all of its
0.008 dB left to PyTorch once its convs are exact). The forbidden ``q`` are intervals
``[(c - 1/2) / p, c / p)``, one per product and midpoint, so the nearest ``q`` outside all of
them is found by sweeping their union (:func:`free_multipliers`, a few percent away) and
then checked on all pairs like an add's. That moves a grid by percents, not parts per
million: a mul's output scale is moved only where it must be. OpenVINO's mul (a float32
product of the dequantised inputs, the factor folded into the output's FakeQuantize) is
checked too where a nearby point of some gap makes it exact with the others
(:data:`MUL_PER_GAP`; the shipped RFDN's four are exact in all of them). Often none is: the
gaps start just above a tie of a small product (a few 1e-6 of a step above it), and
OpenVINO's FakeQuantize adds the output's zero point in float32 before it rounds
(``128 + v``, ulp 2^-16), so it rounds such a product's tie-and-a-bit as the tie; the
builtin gaps of an ESA mul are narrower than OpenVINO's margin (1.4e-5 vs 1.5e-5 relative on
a briefly trained RFDN), so no ratio within 5% is exact in both. Then the mul takes the point
near those gaps where it is exact in OpenVINO, onnxruntime and XNNPACK and the builtin MUL
rounds the fewest pairs twice (:data:`MUL_BUILTIN_PAIRS`): OpenVINO's goal is 0 LSB, the
builtin kernels' 0.01 dB. Where there is none, a mul exact in OpenVINO stays as it is (its
builtin MUL rounding the 0.3-0.4% of pairs it rounds as trained), and one that is not is
made exact in the other kernels alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from .arithmetic import exact, litert
from .arithmetic import onnxruntime as ort
from .arithmetic import openvino as ov
from .arithmetic.exact import F32
from . import ir
from .ir import Graph, Node, Tensor
from .passes.mult_as_view import view_scale

# The int8 ADD kernels of the runtimes that do not add exactly. LiteRT's builtin kernels are
# here as a guard: with 31-bit multipliers they have matched the exact add on every pair
# of every add measured so far, but nothing in their arithmetic promises it.
KERNELS = {"litert-xnnpack": litert.add_xnnpack,
           "litert-builtin (SIMD)": partial(litert.add, simd_lanes=1),
           "litert-builtin (scalar)": partial(litert.add, simd_lanes=None)}

# The int8 MUL kernels, each with the form of the mul it runs: onnxruntime's the graph's own
# (QLinearMul without a factor, the float model's arithmetic with one), LiteRT's the factor
# moved onto the second input's grid (``passes/mult_as_view``). Each must equal the model's.
MUL_KERNELS = {"onnxruntime": (ort.mul, "canonical"), "litert-xnnpack": (litert.mul_xnnpack, "view"),
               "litert-builtin": (litert.mul, "view")}
# How far a mul's scale ratio may move (relative), and its margin from a double-rounding
# window: relative to the product (2^-20: 16 float32 ulps of the exact product; the 31-bit
# significand is closer still), and optionally one in output steps. Not by default: the
# windows' gaps lie just above half steps, where QLinearMul's float zero-point add makes
# ties (it would need 2^-17), so a mul without a factor, which onnxruntime fuses, may find
# none; ESA's muls have factors and are float islands in onnxruntime.
MUL_WITHIN, MUL_MARGIN, MUL_MARGIN_STEPS = 0.05, 2.0 ** -20, 0.0
# Points tried per gap and per mul, nearest first, for a mul exact in OpenVINO too: its
# float32 product and FakeQuantize (the factor folded into the output range) round near-ties
# of their own, which rule out some points the builtin MUL leaves, and with a factor often
# all of them nearby; then the mul is made exact in the other kernels alone.
MUL_PER_GAP, MUL_CANDIDATES = 4, 64
# Where none is: the gaps (nearest first) around which points exact in every kernel but the
# builtin MUL are looked for, the points tried each way (steps of 2^-21 of the ratio), and
# the most of the 65536 pairs the builtin MUL may then round twice (0.2%; an ESA mul left
# where it was trained rounds 0.3-0.4% twice).
MUL_NEAR_GAPS, MUL_NEAR_STEPS, MUL_BUILTIN_PAIRS = 4, 40, 128

# Relative step of the scale search and how far it may go (2^-21 moves XNNPACK's 20-bit
# ratio by about one unit; 4096 steps is 0.2% of the scale).
STEP, MAX_STEPS = 2.0 ** -21, 4096


@dataclass
class Snapped:
    node: str                # the add or mul node's output tensor
    tensor: str              # the tensor whose scale moved
    old_scale: float
    new_scale: float
    mismatches: dict         # kernel -> input pairs that differed before


def mismatches(ta: Tensor, tb: Tensor, tc: Tensor, op: str = "add", mult: float = 1.0,
               openvino_form: tuple | None = None) -> dict[str, int]:
    """Per kernel of :data:`KERNELS` (:data:`MUL_KERNELS` for ``op="mul"``, whose constant
    factor is ``mult``), the input pairs ``(a, b)`` (all of them) on which it differs from
    the exact ``a + b`` (``a * b * mult``) onto ``tc``; also OpenVINO's (``"openvino"``)
    where ``openvino_form`` gives the form its file computes it in (:func:`openvino_forms`)."""
    qa, qb = np.meshgrid(np.arange(ta.qmin, ta.qmax + 1), np.arange(tb.qmin, tb.qmax + 1), indexing="ij")
    values = {ta.name: qa[None, None], tb.name: qb[None, None]}
    g = Graph({t.name: t for t in (ta, tb, tc)}, [], ta.name, tc.name, 1)
    if op == "add":
        node = Node("add", [ta.name, tb.name], tc.name, ir.Add())
        want = exact.KERNELS["add"](g, node, values)
        out = {name: int(np.count_nonzero(k(g, node, values) != want)) for name, k in KERNELS.items()}
        if openvino_form is not None:
            f, form = openvino_form
            (tf, xf), (te, xe) = ((ta, qa), (tb, qb))[::1 if f == 0 else -1]
            out["openvino"] = int(np.count_nonzero(ov.add_values(tf, te, tc, xf[None, None], xe[None, None], form)
                                                   != want))
        return out
    node = Node("mul", [ta.name, tb.name], tc.name, ir.Mul(mult=mult))
    want = exact.KERNELS["mul"](g, node, values)
    vb = view(tb, mult)
    gv = Graph({t.name: t for t in (ta, vb, tc)}, [], ta.name, tc.name, 1)
    nv = Node("mul", [ta.name, vb.name], tc.name, ir.Mul())
    forms = {"canonical": (g, node), "view": (gv, nv)}
    out = {name: int(np.count_nonzero(k(*forms[form], values) != want)) for name, (k, form) in MUL_KERNELS.items()}
    if openvino_form is not None:
        out["openvino"] = int(np.count_nonzero(ov.mul_values(ta, tb, tc, qa[None, None], qb[None, None],
                                                             openvino_form, mult) != want))
    return out


def view(t: Tensor, mult: float) -> Tensor:
    """``t`` on a grid ``mult`` times coarser (the same integers; ``passes/mult_as_view``)."""
    return t if mult == 1.0 else Tensor(t.name, t.channels, view_scale(t.scale, mult), t.zero_point, t.qmin, t.qmax)


def quantized_elementwise(graph: Graph, n: Node) -> bool:
    """A quantized two-input add (without a constant factor) or mul (what the snap fixes)."""
    return n.op in ("add", "mul") and (n.op == "mul" or n.attrs.mult == 1.0) and len(n.inputs) == 2 and \
        all(graph.tensor(t).quantized for t in (*n.inputs, n.output))


def openvino_forms(graph: Graph) -> dict[str, tuple]:
    """Per quantized add and mul of the canonical ``graph`` (its output), the form OpenVINO
    computes it in, in the ``openvino`` target's file (whose passes decide it: a copy between
    a conv and an add, for one): for an add the input it rescales and the form of its sum
    (``arithmetic.openvino.add_form``), for a mul which inputs a sigmoid writes."""
    lowered = openvino_lowered(graph)
    return {n.output: ov.add_form(lowered, n) if n.op == "add" else
            tuple(ov.sigmoid_written(lowered, t) for t in n.inputs)
            for n in lowered.nodes if quantized_elementwise(lowered, n)}


def openvino_lowered(graph: Graph) -> Graph:
    """The canonical ``graph`` as the ``openvino`` target's file holds it."""
    from .options import ExportOptions
    from .targets import TARGETS

    return TARGETS["openvino"].lower(graph, ExportOptions(format="onnx", target="openvino"))


def _mismatches_of(graph: Graph, n: Node, forms: dict) -> dict[str, int]:
    """:func:`mismatches` of add or mul ``n``, only the kernels that differ."""
    ts = (graph.tensor(t) for t in (*n.inputs, n.output))
    return {k: v for k, v in mismatches(*ts, op=n.op, mult=n.attrs.mult,
                                        openvino_form=forms.get(n.output)).items() if v}


def inexact(graph: Graph) -> dict[str, dict[str, int]]:
    """The quantized adds and muls of ``graph`` that some kernel rounds otherwise on some
    input pair: output -> :func:`mismatches` (only the nonzero ones)."""
    forms = openvino_forms(graph)
    return {n.output: bad for n in graph.nodes
            if quantized_elementwise(graph, n) and (bad := _mismatches_of(graph, n, forms))}


def free_multipliers(ta: Tensor, tb: Tensor, tc: Tensor, within: float = MUL_WITHIN,
                     margin: float = MUL_MARGIN, margin_steps: float = MUL_MARGIN_STEPS,
                     per_gap: int = 1) -> np.ndarray:
    """Factors ``f`` (nearest 1 first, within ``1 +- within``) such that LiteRT's builtin MUL
    with the scale ratio ``f * s_a s_b / s_c`` rounds no product of two input levels twice.

    With the ratio ``q 2^-s``, ``q`` in [1/2, 1): the high multiply gives ``r = round(p q)``
    (ties away from zero), the shift ``round(r / 2^s)`` (ties away). That differs from one
    rounding of ``p q / 2^s`` only where ``r`` is a midpoint ``c = 2^s k + 2^(s-1)`` and
    ``p q < c``, i.e. for ``q`` in ``[(c - 1/2) / p, c / p)`` (both signs alike). Each window
    is widened by ``margin`` of ``c`` plus ``margin_steps`` output steps on both sides; the answer is one point per gap
    of their union (per shift the range spans), the one nearest the ratio now, and with
    ``per_gap`` > 1 that many more spread across its inside (another kernel, OpenVINO's float
    product, may round near-ties of its own at the first)."""
    m = float(F32(ta.scale)) * float(F32(tb.scale)) / float(F32(tc.scale))
    a = np.arange(ta.qmin, ta.qmax + 1, dtype=np.int64) - ta.zero_point
    b = np.arange(tb.qmin, tb.qmax + 1, dtype=np.int64) - tb.zero_point
    p = np.unique(np.abs(np.outer(a, b)))
    p = p[p > 0].astype(np.float64)
    out = []
    for e in sorted({math.frexp(m * (1 - within))[1], math.frexp(m * (1 + within))[1]}):
        s = -e
        lo, hi = max(0.5, m * (1 - within) * 2.0 ** s), min(1.0, m * (1 + within) * 2.0 ** s)
        q = m * 2.0 ** s
        if s < 1:  # no right shift: one rounding anywhere in this range
            out.append(min(max(q, lo), hi) / q)
            continue
        half, step = 2.0 ** (s - 1), 2.0 ** s
        pad = margin_steps * step  # in units of the high multiply's output
        k0 = np.ceil((lo * p * (1 - 2 * margin) - 0.5 - pad - half) / step)  # the first window reaching lo
        k1 = np.floor((hi * p * (1 + 2 * margin) + 0.5 + pad - half) / step)  # the last one starting below hi
        n = np.maximum(k1 - k0 + 1, 0).astype(np.int64)
        first = np.cumsum(n) - n
        c = step * (np.repeat(k0, n) + np.arange(n.sum()) - np.repeat(first, n)) + half
        pp = np.repeat(p, n)
        start, end = (c * (1 - margin) - 0.5 - pad) / pp, (c * (1 + margin) + pad) / pp
        order = np.argsort(start)
        start, end = start[order], np.maximum.accumulate(end[order])
        g0, g1 = np.concatenate([[lo], end]), np.concatenate([start, [hi]])  # after each window, to the next
        g0, g1 = np.maximum(g0, lo), np.minimum(g1, hi)
        keep = g1 > g0
        g0, g1 = g0[keep], g1[keep]
        mid = (g0 + g1) / 2
        best = np.clip(q, g0 + (mid - g0) * 1e-3, g1 - (g1 - mid) * 1e-3)  # strictly inside its gap
        out += list(best / q)
        for k in range(1, per_gap):
            out += list((g0 + (g1 - g0) * k / per_gap) / q)
    f = np.asarray(out, np.float64)
    return f[np.argsort(np.abs(f - 1))]


def snap(model) -> list[Snapped]:
    """Move scales of ``model`` (calibrated, lowerable) until every quantized add (mul) of
    its canonical graph is exact in every kernel of :data:`KERNELS` (:data:`MUL_KERNELS`);
    returns what moved.

    Adds and muls are fixed in graph order, each seeing the scales moved before it (the tensors a moved
    quantizer holds are updated in the graph); the model is then lowered again and checked,
    since a tensor copied from a moved one (``GraphBuilder.like``) only changes there. One
    no scale can fix (no free quantizer, or moved once and undone since) is left to the
    export's hint."""
    from .builder import lower_model

    done, moved, forms = set(), [], None
    while True:
        holders: dict = {}
        graph = lower_model(model, holders=holders)
        forms = openvino_forms(graph) if forms is None else forms  # structure only: scales do not move it
        moved_now = False
        for n in graph.nodes:
            if not quantized_elementwise(graph, n) or n.output in done or \
                    not (bad := _mismatches_of(graph, n, forms)):
                continue
            done.add(n.output)
            fixed = _fix(graph, holders, n, forms.get(n.output))
            if fixed is not None:
                name, old, new = fixed
                moved.append(Snapped(n.output, name, old, new, bad))
                moved_now = True
                for t, q in holders.items():
                    if q is holders[name]:
                        graph.tensor(t).scale = new
        if not moved_now:
            return moved


def _fix(graph: Graph, holders: dict, n: Node, openvino_form=None):
    """Find a scale for ``n``'s output (or, if that grid is fixed, for an input a conv
    writes) at which the add or mul is exact in every kernel; set it on the quantizer. A mul
    no nearby scale makes exact in OpenVINO and the builtin MUL alike is made exact in
    every kernel but the builtin MUL, which rounds the fewest pairs twice; failing that it
    stays if OpenVINO is exact, or is made exact in every kernel but OpenVINO (module docstring)."""
    names = [n.output] + [t for t in n.inputs if (p := graph.producer(t)) is not None and p.op == "conv"]
    ts = {t: graph.tensor(t) for t in (*n.inputs, n.output)}
    free = [(name, q) for name in names if (q := holders.get(name)) is not None and q.fixed_scale is None]

    def trial(name, scale):
        t = {k: (Tensor(v.name, v.channels, scale, v.zero_point, v.qmin, v.qmax) if k == name else v)
             for k, v in ts.items()}
        return mismatches(t[n.inputs[0]], t[n.inputs[1]], t[n.output], n.op, n.attrs.mult, openvino_form)

    def take(name, q, absmax):
        with torch.no_grad():
            q.absmax.copy_(absmax)
        return name, ts[name].scale, float(q.scale_for(absmax))

    for name, q in free:
        for absmax in _ranges(n, ts, name, q, with_openvino=openvino_form is not None):
            if not any(trial(name, float(q.scale_for(absmax))).values()):
                return take(name, q, absmax)
    if n.op != "mul" or openvino_form is None:
        return None
    for name, q in free:  # exact in OpenVINO, the builtin MUL rounding the fewest pairs twice
        best = None
        for absmax in _near_gaps(n, ts, name, q):
            bad = trial(name, float(q.scale_for(absmax)))
            pairs = bad.pop("litert-builtin")
            if not any(bad.values()) and pairs <= MUL_BUILTIN_PAIRS and (best is None or pairs < best[0]):
                best = (pairs, absmax)
                if not pairs:  # exact in every kernel after all
                    return take(name, q, absmax)
        if best is not None:
            return take(name, q, best[1])
    now = trial(n.output, ts[n.output].scale)
    if not now.pop("openvino") and not any(v for k, v in now.items() if k != "litert-builtin"):
        return None  # exact in OpenVINO and XNNPACK: it stays so, rounding a few pairs twice in the builtin MUL
    if not any(now.values()):
        return None  # exact in the others: no move makes OpenVINO exact with them
    openvino_form = None
    for name, q in free:  # exact in the others at least
        for absmax in _ranges(n, ts, name, q, with_openvino=False):
            if not any(trial(name, float(q.scale_for(absmax))).values()):
                return take(name, q, absmax)
    return None


def _near_gaps(n: Node, ts: dict, name: str, q):
    """Ranges of quantizer ``q`` (holding ``name``) around the :data:`MUL_NEAR_GAPS` builtin
    gaps of mul ``n`` nearest its ratio now, :data:`MUL_NEAR_STEPS` steps of 2^-21 each way
    (the gap's own point first, then nearest first); a range may shrink by as much as
    ``MUL_NEAR_STEPS * 2^-20`` (a grid 4e-5 finer clips a value at its end by 4e-5 of a step)."""
    fs = free_multipliers(ts[n.inputs[0]], view(ts[n.inputs[1]], n.attrs.mult), ts[n.output])[:MUL_NEAR_GAPS]
    steps = sorted(range(-MUL_NEAR_STEPS, MUL_NEAR_STEPS + 1), key=abs)
    for f in fs:
        for k in steps:
            g = f * (1 + k * 2.0 ** -21)
            grow = 1 / g if name == n.output else g
            if grow > 1 - MUL_NEAR_STEPS * 2.0 ** -20:
                yield (q.absmax.detach().double() * grow).float()


def _ranges(n: Node, ts: dict, name: str, q, with_openvino: bool):
    """Candidate ranges of quantizer ``q`` (holding ``name``) for add or mul ``n``, nearest first."""
    if n.op != "mul":
        return _candidates(q.absmax.detach())
    # The ratio s_a s_b / s_c times f: the output's range over f, an input's times f; only
    # ranges that grow (a grid a few percent coarser clips nothing).
    per_gap, count = (MUL_PER_GAP, MUL_CANDIDATES) if with_openvino else (1, 64)
    fs = free_multipliers(ts[n.inputs[0]], view(ts[n.inputs[1]], n.attrs.mult), ts[n.output], per_gap=per_gap)
    grow = 1 / fs[fs < 1] if name == n.output else fs[fs > 1]
    return ((q.absmax.detach().double() * g).float() for g in grow[:count])


def _candidates(absmax: torch.Tensor):
    """Ranges near ``absmax``, nearest first, in steps of :data:`STEP` of it."""
    for k in range(1, MAX_STEPS + 1):
        for sign in (1, -1):
            yield (absmax.double() * (1 + sign * k * STEP)).float()
