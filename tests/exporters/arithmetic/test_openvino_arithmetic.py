"""OpenVINO's CPU plugin on the ``openvino`` target's ONNX file (``openvino.KERNELS``).

Numpy only, but for one slow test that runs the graphs below in OpenVINO (it skips without
it). The golden digests were recorded with OpenVINO 2026.4.1's CPU plugin (the runner's
configuration: f32 precision, one stream, static shapes) on an x86 CPU with AVX512-VNNI
and AMX: each graph's outputs on its images, which the reference reproduced bit for bit
while the exact arithmetic did not (but for ``residual``, where it is the fused multiply-add
the reference would otherwise take that misses). Every rule of the table changes at least
one of them.
"""
import hashlib
from fractions import Fraction

import numpy as np
import pytest

from qnas_deploy.exporters import reference, targets
from qnas_deploy.exporters.arithmetic import openvino
from qnas_deploy.exporters.ir import OPS, Graph, Node, Tensor
from qnas_deploy.exporters.options import ExportOptions

F32 = np.float32
IMAGE = float(F32(1 / 255))


# helpers ------------------------------------------------------------------------------------

def _nearest_f32(x: Fraction) -> F32:
    """The float32 nearest to the rational ``x``, ties to even (by exhaustive comparison)."""
    r = F32(float(x))
    cands = [np.nextafter(r, F32(-np.inf)), r, np.nextafter(r, F32(np.inf))]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - x), int(np.array(c).view(np.uint32)) & 1))
    return F32(best)


def test_fma_rounds_once():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(3000) * 10 ** rng.uniform(-3, 3, 3000)).astype(F32)
    b = (rng.standard_normal(3000) * 10 ** rng.uniform(-3, 3, 3000)).astype(F32)
    c = (rng.standard_normal(3000) * 10 ** rng.uniform(-3, 3, 3000)).astype(F32)
    # products that land half an ulp from c's neighbours: the float64 sum alone would round twice
    a[:3] = [F32(1 + 2 ** -12), F32(3), F32(2 ** 20 + 1)]
    b[:3] = [F32(1 + 2 ** -12), F32(2 ** -25 + 2 ** -48), F32(2 ** -24)]
    c[:3] = [F32(-1), F32(1), F32(2 ** 30)]
    got = openvino.fma(a, b, c)
    want = [_nearest_f32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))) for x, y, z in zip(a, b, c)]
    assert np.array_equal(got.view(np.uint32), np.array(want, F32).view(np.uint32))


def test_fake_quantize_of_a_quantize_linear():
    """``scale * (0 - zp)``, ``scale * (255 - zp)``; ``isc = 255 / (ih - il)`` and
    ``ish = -il * 255 / (ih - il)`` in float32: for s = 2^-3, zp = 128: isc 8, ish 128."""
    t = Tensor("t", 1, 0.125, 128)
    il, ih = openvino.quantize_range(t)
    assert (il, ih) == (-16.0, 15.875)
    assert [float(v) for v in openvino.scale_shift(il, ih)] == [8.0, 128.0]
    t = Tensor("t", 1, 0.0375, 128)
    il, ih = openvino.quantize_range(t, mult=0.75)      # a factor folded into the scale: 0.05
    s = F32(F32(0.0375) / F32(0.75))
    assert (il, ih) == (F32(s * F32(-128)), F32(s * F32(127)))
    isc, ish = openvino.scale_shift(il, ih)
    assert isc == F32(F32(255) / F32(ih - il)) and ish == F32(F32(-il * F32(255)) / F32(ih - il))


def test_optimized_formula_makes_the_shift_per_tensor():
    isc = np.array([2.0, 2.5], F32)
    il = np.array([-64.0, -51.2], F32)
    ih = np.array([63.5, 50.8], F32)
    _, ish = openvino.scale_shift(il, ih)
    near = ish + np.array([0, 3e-5], F32)
    assert openvino.optimized_formula(il, ih, isc, near)[1].tolist() == [near[0]]
    far = ish + np.array([0, 1e-4], F32)
    assert openvino.optimized_formula(il, ih, isc, far)[1].tolist() == far.tolist()
    # a negligible per-tensor shift (below 1e-5 of the range) is dropped
    assert openvino.optimized_formula(F32(-0.001), F32(127.5), F32(2), F32(0.002))[1].tolist() == [0.0]


def test_onednn_exp_and_logistic():
    x = np.linspace(-30, 30, 20001).astype(F32)
    e = openvino.onednn_exp(-np.abs(x))
    assert np.max(np.abs(e / np.exp(-np.abs(x).astype(np.float64)) - 1)) < 4e-7
    y = openvino.onednn_logistic(x)
    assert np.max(np.abs(y - 1 / (1 + np.exp(-x.astype(np.float64))))) < 2e-7
    assert openvino.onednn_logistic(np.array([0.0], F32)).tolist() == [0.5]
    assert openvino.onednn_exp(np.array([-100.0], F32)).tolist() == [0.0]      # below log(FLT_MIN)


def test_the_table_and_the_target():
    assert reference.ARITHMETIC["openvino"] is openvino.KERNELS
    assert set(openvino.KERNELS) == set(OPS)
    assert targets.get("openvino").arithmetic == "openvino"


def _conv(weight, *, groups=1, pad=(0, 0), w_scale, bias=None):
    weight = np.asarray(weight, np.int8)
    o, _, kh, kw = weight.shape
    return OPS["conv"](stride=1, pad=pad, dilation=1, groups=groups, kernel=(kh, kw), weight=weight,
                       w_scale=np.asarray(w_scale, np.float32),
                       bias=np.zeros(o, np.int32) if bias is None else np.asarray(bias, np.int32), w_bits=8)


def test_full_path_is_lpts_choice():
    """``getNotEmpty``: the input a FakeQuantize writes (a data-movement op's output is not
    one); of two, the one read once when the other is read more often; else input 0."""
    t = {n: Tensor(n, 4, 0.1, 128) for n in ("x", "a", "b", "c", "d", "e", "f", "g")}
    conv = _conv(np.ones((4, 4, 1, 1)), w_scale=np.ones(4))
    nodes = [Node("conv", ["x"], "a", conv, "ca"),
             Node("max_pool", ["x"], "b", OPS["max_pool"](kernel=1, stride=1), "p"),
             Node("conv", ["x"], "g", conv, "cg"),
             Node("add", ["b", "a"], "c", OPS["add"](), "fq-second"),
             Node("add", ["c", "b"], "d", OPS["add"](), "fq-first"),
             Node("add", ["a", "g"], "e", OPS["add"](), "read-once-second"),
             Node("add", ["a", "c"], "f", OPS["add"](), "both-read-twice")]
    g = Graph(t, nodes, "x", "f", 1)
    assert [openvino.full_path(g, n) for n in nodes[3:]] == [1, 0, 1, 0]


# golden graphs ---------------------------------------------------------------------------------

def tie_graph(random_scales: bool = False, seed: int = 0) -> Graph:
    """A graph with every OpenVINO pattern of the exported models: convs with and without a
    bias, a depthwise conv, two identity requantisations of one tensor (merged), a concat of
    conv outputs, a chain of adds, a conv -> sigmoid -> mul (with a factor) -> add chain, an
    add of two copies of single-reader convs. Dyadic scales make exact rounding ties common;
    ``random_scales`` makes the float32 roundings of the formulas matter instead."""
    rng = np.random.default_rng(seed)
    srng = np.random.default_rng(seed + 100)
    w = lambda *s: rng.integers(-7, 8, s)
    if random_scales:
        ws = lambda n, base: (base * rng.uniform(0.7, 1.4, n)).astype(np.float32)
        sc = lambda v: float(np.float32(v * srng.uniform(0.8, 1.25)))
    else:
        ws = lambda n, base: (base * rng.choice([1.0, 1.5, 1.25], n)).astype(np.float32)
        sc = lambda v: v
    t = {"x": Tensor("x", 3, IMAGE, 0), "out": Tensor("out", 16, 1.25 * 2.0 ** -3, 128)}
    for name, c, s, z, q in (("a", 16, 2.0 ** -3, 128, 255), ("b", 16, 1.5 * 2.0 ** -3, 128, 255),
                             ("bn", 16, 2.0 ** -2, 128, 255), ("r8", 16, 2.0 ** -4, 0, 255),
                             ("r4", 16, 2.0 ** -1, 0, 15), ("d0", 8, 2.0 ** -3, 128, 255),
                             ("d1", 8, 1.5 * 2.0 ** -2, 128, 255), ("cat", 16, 1.25 * 2.0 ** -3, 128, 255),
                             ("s1", 16, 1.5 * 2.0 ** -2, 128, 255), ("s2", 16, 2.0 ** -1, 128, 255),
                             ("c4", 16, 2.0 ** -3, 128, 255), ("mask", 16, 2.0 ** -8, 0, 255),
                             ("m", 16, 1.25 * 2.0 ** -3, 128, 255), ("s3", 16, 1.5 * 2.0 ** -1, 128, 255),
                             ("o", 16, 2.0 ** -4, 128, 255), ("y", 16, 1.5 * 2.0 ** -4, 128, 255),
                             ("e1", 16, 1.5 * 2.0 ** -3, 128, 255), ("e2", 16, 2.0 ** -3, 128, 255),
                             ("s4", 16, 1.25 * 2.0 ** -2, 128, 255)):
        t[name] = Tensor(name, c, s if name == "mask" else sc(s), z, 0, q)
    nodes = [
        Node("conv", ["x"], "a", _conv(w(16, 3, 3, 3), pad=(1, 1), w_scale=ws(16, 2.0 ** -2)), "ca"),
        Node("conv", ["x"], "b", _conv(w(16, 3, 3, 3), pad=(1, 1), w_scale=ws(16, 2.0 ** -2),
                                       bias=rng.integers(-300, 300, 16)), "cb"),
        Node("conv", ["a"], "bn", _conv(w(16, 1, 1, 1), groups=16, w_scale=ws(16, 2.0 ** -1),
                                        bias=rng.integers(-40, 40, 16)), "cbn"),
        Node("requant", ["bn"], "r8", OPS["requant"](), "q8"),
        Node("requant", ["bn"], "r4", OPS["requant"](), "q4"),
        Node("conv", ["r8"], "d0", _conv(w(8, 16, 1, 1), w_scale=ws(8, 2.0 ** -4), bias=rng.integers(-90, 90, 8)),
             "cd0"),
        Node("conv", ["r4"], "d1", _conv(w(8, 16, 3, 3), pad=(1, 1), w_scale=ws(8, 2.0 ** -5)), "cd1"),
        Node("concat", ["d0", "d1"], "cat", OPS["concat"](), "cat"),
        Node("add", ["a", "b"], "s1", OPS["add"](), "add1"),
        Node("add", ["s1", "bn"], "s2", OPS["add"](), "add2"),
        Node("conv", ["cat"], "c4", _conv(w(16, 16, 1, 1), w_scale=ws(16, 2.0 ** -4), bias=rng.integers(-60, 60, 16)),
             "c4"),
        Node("sigmoid", ["c4"], "mask", OPS["sigmoid"](), "sig"),
        Node("mul", ["s2", "mask"], "m", OPS["mul"](mult=0.75), "mul"),
        Node("add", ["m", "s2"], "s3", OPS["add"](), "add3"),
        Node("conv", ["s3"], "o", _conv(w(16, 16, 3, 3), pad=(1, 1), w_scale=ws(16, 2.0 ** -6),
                                        bias=rng.integers(-200, 200, 16)), "co"),
        Node("add", ["o", "s3"], "y", OPS["add"](), "sum"),
        Node("conv", ["x"], "e1", _conv(w(16, 3, 3, 3), pad=(1, 1), w_scale=ws(16, 2.0 ** -2)), "ce1"),
        Node("conv", ["x"], "e2", _conv(w(16, 3, 3, 3), pad=(1, 1), w_scale=ws(16, 2.0 ** -2),
                                        bias=rng.integers(-300, 300, 16)), "ce2"),
        Node("add", ["e1", "e2"], "s4", OPS["add"](), "add4"),
        Node("add", ["y", "s4"], "out", OPS["add"](), "add5"),
    ]
    return Graph(t, nodes, "x", "out", 1)


def merged_graph() -> Graph:
    """Two identity requantisations of the image onto two grids (OpenVINO merges the convs and
    requantises in FakeQuantize nodes of their own, ``x * isc``) and their sum; at pixel 245
    the merged form and a conv's own FakeQuantize round apart."""
    t = {"x": Tensor("x", 3, IMAGE, 0), "A": Tensor("A", 3, 0.005017150659114122, 0),
         "B": Tensor("B", 3, 0.004, 0, 0, 15), "y": Tensor("y", 3, 0.0045, 0)}
    nodes = [Node("requant", ["x"], "A", OPS["requant"](), "qa"), Node("requant", ["x"], "B", OPS["requant"](), "qb"),
             Node("add", ["A", "B"], "y", OPS["add"](), "sum")]
    return Graph(t, nodes, "x", "y", 1)


def single_graph() -> Graph:
    """One identity requantisation (the conv's last post-op: oneDNN's destination scale
    ``1 / isc``, applied as its reciprocal) plus the image."""
    t = {"x": Tensor("x", 3, IMAGE, 0), "A": Tensor("A", 3, 0.005017150659114122, 0), "y": Tensor("y", 3, 0.009, 0)}
    nodes = [Node("requant", ["x"], "A", OPS["requant"](), "qa"), Node("add", ["A", "x"], "y", OPS["add"](), "sum")]
    return Graph(t, nodes, "x", "y", 1)


def apart_graph(inside: bool = False) -> Graph:
    """``e1 + e2``, each a copy of one channel of the image onto its grid (independent, nearly
    uniform pairs), on scales where the rescaled branch rounded on its own (a separate Eltwise
    node) or fused with the sum (one fused multiply-add) differ on 3 of the 65536 pairs.
    ``inside``: e1 is also read by a conv, so the branch is computed in the add's subgraph."""
    sf, se, sy = 0.12210731953382492, 0.07205972075462341, 0.07170135527849197
    perm = lambda k: np.eye(3, dtype=np.int64)[np.roll(np.arange(3), k)].reshape(3, 3, 1, 1)
    t = {"x": Tensor("x", 3, IMAGE, 0), "e1": Tensor("e1", 3, sf, 128), "e2": Tensor("e2", 3, se, 128),
         "y": Tensor("y", 3, sy, 128)}
    nodes = [Node("conv", ["x"], "e1", _conv(perm(0), w_scale=np.full(3, sf * 255), bias=np.full(3, -128)), "c1"),
             Node("conv", ["x"], "e2", _conv(perm(1), w_scale=np.full(3, se * 255), bias=np.full(3, -128)), "c2"),
             Node("add", ["e1", "e2"], "y", OPS["add"](), "sum")]
    if not inside:
        return Graph(t, nodes, "x", "y", 1)
    t["z"] = Tensor("z", 3, sy, 128)
    t["out"] = Tensor("out", 3, 2 * sy, 128)
    nodes += [Node("conv", ["e1"], "z", _conv(perm(2), w_scale=np.full(3, 0.5)), "c3"),
              Node("add", ["y", "z"], "out", OPS["add"](), "sum2")]
    return Graph(t, nodes, "x", "out", 1)


def residual_graph() -> Graph:
    """``a + f(a)``: ``a`` an add's output (a copy of one image channel, plus a small conv of
    another), ``f`` a conv onto a 22x finer grid that copies ``a``'s upper-left neighbour
    (independent pairs on random images). On these scales (those of a trained
    basic_lrtail_bicubic's last add) the rescaled branch rounded on its own and the fused
    multiply-add differ on one pair in 65536, (145, 139), where the sum is 33.49999 steps."""
    sf, se, sy = 0.007510516792535782, 0.00033579397131688893, 0.003921568859368563
    perm = lambda k: np.eye(3, dtype=np.int64)[np.roll(np.arange(3), k)].reshape(3, 3, 1, 1)
    up_left = np.zeros((3, 3, 3, 3), np.int64)
    for c in range(3):
        up_left[c, c, 0, 0] = 1
    t = {"x": Tensor("x", 3, IMAGE, 0), "e1": Tensor("e1", 3, sf, 128), "e0": Tensor("e0", 3, sf, 128),
         "a": Tensor("a", 3, sf, 128), "z": Tensor("z", 3, se, 128), "y": Tensor("y", 3, sy, 0)}
    nodes = [Node("conv", ["x"], "e1", _conv(perm(0), w_scale=np.full(3, sf * 255), bias=np.full(3, -128)), "c1"),
             Node("conv", ["x"], "e0", _conv(perm(2), w_scale=np.full(3, sf * 2.3)), "c0"),
             Node("add", ["e1", "e0"], "a", OPS["add"](), "sum1"),
             Node("conv", ["a"], "z", _conv(up_left, pad=(1, 1), w_scale=np.full(3, se / sf)), "c2"),
             Node("add", ["a", "z"], "y", OPS["add"](), "sum2")]
    return Graph(t, nodes, "x", "y", 1)


def residual_images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(4)]


def small_images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (9, 12, 1), dtype=np.uint8)
    return [rng.integers(0, 256, (32, 37, 3), dtype=np.uint8), np.repeat(grey, 3, axis=2),
            rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)]


def big_images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(4)]


CASES = {
    "ties": (lambda: tie_graph(), small_images),
    "random": (lambda: tie_graph(True, 2), lambda: small_images() + big_images()),
    "merged": (merged_graph, small_images),
    "single": (single_graph, small_images),
    "apart": (lambda: apart_graph(False), big_images),
    "inside": (lambda: apart_graph(True), big_images),
    "residual": (residual_graph, residual_images),
}

# OpenVINO 2026.4.1, CPU plugin, the runner's configuration (runtimes/openvino.py)
GOLDEN = {
    "ties": "8e914aac719bf8d95a87766d2e99f40f3eff9b0d0eea595722e5b7798fb67530",
    "random": "0d85fea3c4d847ee970ef794130774ea18622056ecbfe9e1140587a51b4c7457",
    "merged": "fb49c8e7c748ab5b0d223eb67613a12905107b1ecd8a4d8c63d3948ecbca6118",
    "single": "9576cc626459f06a2a0dde5807f1520096eeca163999c20df667deb841178217",
    "apart": "b9cf3509e119f3482e327029541107dd56dc84d2f9d7d3d0903c37b595fefbd3",
    "inside": "29f0f10ea962014c2ba28ff5d29c20c9f1e2e840419329716babb51ab53c05a5",
    "residual": "5135dbfdbf80757d873778ec160d561b1a769e9ff91d4de4b9b8ae2e90d633f9",  # = exact, != fused
}


def lowered(case: str) -> Graph:
    return targets.get("openvino").lower(CASES[case][0](), ExportOptions(target="openvino"))


def _digest(outputs) -> str:
    h = hashlib.sha256()
    for o in outputs:
        h.update(np.ascontiguousarray(o, np.uint8).tobytes())
    return h.hexdigest()


def _outputs(case: str, arithmetic: str = "openvino"):
    g = lowered(case)
    return [reference.runner(g, arithmetic)(im) for im in CASES[case][1]()]


@pytest.mark.parametrize("case", list(CASES))
def test_reference_is_what_openvino_computed(case):
    assert _digest(_outputs(case)) == GOLDEN[case]


@pytest.mark.parametrize("case", ["ties", "random", "single", "apart", "inside"])
def test_the_exact_arithmetic_is_not(case):
    assert _digest(_outputs(case, "onnxruntime")) != GOLDEN[case]


def _two_roundings(a, b, c):
    return ((np.asarray(a, F32) * np.asarray(b, F32)).astype(F32) + np.asarray(c, F32)).astype(F32)


def _fma_requantize(v, il, ih):           # a FakeQuantize node's formula in place of the Snippets one
    isc, ish = openvino.scale_shift(il, ih)
    v = np.minimum(np.maximum(v, openvino._channels(il)), openvino._channels(ih))
    return np.clip(np.rint(openvino.fma(v, openvino._channels(isc), openvino._channels(ish))), 0, 255)


_post_op = openvino.post_op_requantize
_full = openvino.full_path


def _no_reciprocal(v, il, ih, last, channel=None):      # the destination scale as isc itself
    return _post_op(v, il, ih, False, channel) if last else _post_op(v, il, ih, last, channel)


@pytest.mark.parametrize("rule, replacement, case", [
    ("fma", _two_roundings, "random"),
    ("standalone_requantize", _fma_requantize, "ties"),
    ("full_path", lambda g, n: 1 - _full(g, n), "ties"),
    ("_chained", lambda g, name, node: False, "ties"),
    ("_merged_unfused", lambda g, node: False, "merged"),
    ("post_op_requantize", _no_reciprocal, "single"),
    ("_rescaled_apart", lambda g, name, node: False, "apart"),
    ("_rescaled_apart", lambda g, name, node: True, "inside"),
    ("_rescaled_apart", lambda g, name, node: False, "residual"),
    ("keeps_dequantization", lambda attrs: False, "random"),
])
def test_every_rule_shows_in_a_golden_graph(rule, replacement, case, monkeypatch):
    monkeypatch.setattr(openvino, rule, replacement)
    assert _digest(_outputs(case)) != GOLDEN[case]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_golden_graphs_in_openvino(case, tmp_path):
    pytest.importorskip("openvino")
    from qnas_deploy.exporters.onnx import simplify, to_onnx
    from qnas_deploy.runtimes import openvino as ov_runtime

    g = lowered(case)
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(simplify(to_onnx(g)).SerializeToString())
    run = ov_runtime.image_runner(path, threads=1)
    got = [run(im) for im in CASES[case][1]()]
    want = [reference.runner(g, "openvino")(im) for im in CASES[case][1]()]
    for i, (o, w) in enumerate(zip(got, want)):
        assert np.array_equal(o, w), (case, i, int((o != w).sum()))
