"""Every target pass on its own: what it rewrites, that it leaves its input graph alone,
that the property it ensures holds after it, and that the rewritten graph computes exactly
what the original does (0 steps, in the exact arithmetic: every pass is a change of form,
never of value)."""
import numpy as np
import pytest

from qnas_deploy.exporters import ir, reference
from qnas_deploy.exporters.options import ExportOptions
from qnas_deploy.exporters.passes import Pass, Property, run_passes
from qnas_deploy.exporters.passes import (concat_on_grid, conv_add_copy, crd_to_dcr, dense, mult_as_view,
                                          pack_int4, pair_safe, pointwise_exact, requant_as_conv, tile_as_conv,
                                          u8s8_weights, widen)

S = float(np.float32(1 / 255))
GEOMETRY = dict(stride=1, pad=(0, 0), dilation=1, kernel=(1, 1))


def _t(name, c, scale=S, zp=0, lo=0, hi=255):
    return ir.Tensor(name, c, scale, zp, lo, hi)


def _conv(rng, c_in, c_out, groups=1, peak=127, bits=8, kernel=(1, 1), pad=(0, 0)):
    w = rng.integers(-peak, peak + 1, (c_out, c_in // groups, *kernel)).astype(np.int8)
    return ir.Conv(weight=w, w_scale=rng.uniform(1e-3, 4e-3, c_out).astype(np.float32),
                   bias=rng.integers(-500, 500, c_out).astype(np.int32), w_bits=bits, groups=groups,
                   **{**GEOMETRY, "kernel": kernel, "pad": pad})


def _graph(tensors, nodes, out, scale=1):
    return ir.Graph({t.name: t for t in tensors}, nodes, "image", out, scale)


def _image(h=9, w=11, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (1, 3, h, w), dtype=np.uint8)


def _same_values(before, after, x=None):
    x = _image() if x is None else x
    assert np.array_equal(reference.run(before, x), reference.run(after, x))


def _snapshot(g):
    return [(n.op, tuple(n.inputs), n.output, id(n.attrs)) for n in g.nodes], dict(g.tensors)


def _check(p: Pass, g, options=ExportOptions()):
    """Run ``p`` as a target does; the input graph must not change."""
    before = _snapshot(g)
    out = run_passes(g, [p], options)
    assert _snapshot(g) == before
    for prop in p.ensures:
        assert prop.violations(out) == []
    return out


def test_requant_as_conv_only_between_two_grids():
    g = _graph([_t("image", 3), _t("a", 3, 0.02, 0, 0, 15), ir.Tensor("f", 3), _t("b", 3)],
               [ir.Node("requant", ["image"], "a", ir.Requant()), ir.Node("requant", ["a"], "f", ir.Requant()),
                ir.Node("requant", ["f"], "b", ir.Requant())], "b")
    assert requant_as_conv.NO_INTEGER_REQUANT.violations(g) == ["a"]
    out = _check(requant_as_conv.PASS, g)
    assert [n.op for n in out.nodes] == ["conv", "requant", "requant"]
    c = out.nodes[0].attrs
    assert c.bias is None and c.depthwise(3) and (c.weight == 1).all() and (c.w_scale == 1).all()
    _same_values(g, out)


def test_concat_on_grid_requantises_only_inputs_on_another_grid():
    g = _graph([_t("image", 3), _t("a", 3, 0.01, 128), _t("cat", 6, 0.01, 128)],
               [ir.Node("conv", ["image"], "a", ir.Conv(weight=np.eye(3, dtype=np.int8).reshape(3, 3, 1, 1) * 50,
                                                        w_scale=np.full(3, 0.01, np.float32), bias=None, w_bits=8,
                                                        groups=1, **GEOMETRY)),
                ir.Node("concat", ["a", "image"], "cat", ir.Concat())], "cat")
    out = _check(concat_on_grid.PASS, g)
    assert [n.op for n in out.nodes] == ["conv", "requant", "concat"]
    assert out.nodes[2].inputs == ["a", "image.to.cat"] and out.tensor("image.to.cat").same_grid(out.tensor("cat"))
    _same_values(g, out)


def test_tile_as_conv_is_exact_one_hot():
    g = _graph([_t("image", 3), _t("rep", 12)], [ir.Node("tile", ["image"], "rep", ir.Tile(times=4))], "rep")
    out = _check(tile_as_conv.PASS, g)
    (n,) = out.nodes
    assert n.op == "conv" and n.attrs.weight.shape == (12, 3, 1, 1) and n.attrs.weight.sum() == 12
    x = _image()
    assert np.array_equal(reference.run(out, x), np.tile(x, (1, 4, 1, 1)))


def test_mult_as_view_moves_the_factor_into_a_declared_scale():
    g = _graph([_t("image", 3), _t("m", 3, 1 / 256, 0), _t("y", 3, 0.005, 128)],
               [ir.Node("sigmoid", ["image"], "m", ir.Sigmoid()),
                ir.Node("mul", ["image", "m"], "y", ir.Mul(mult=1.37))], "y")
    out = _check(mult_as_view.PASS, g)
    assert [n.op for n in out.nodes] == ["sigmoid", "reinterpret", "mul"]
    view = out.tensor(out.nodes[1].output)
    assert view.scale == float(np.float32(np.float32(1 / 256) * np.float32(1.37))) and out.nodes[2].attrs.mult == 1.0
    # a float32 product in another order: equal but where a value lies within a float32 bit of a tie
    x = _image(16, 16)
    a, b = reference.run(g, x), reference.run(out, x)
    assert np.abs(a.astype(int) - b).max() <= 1 and np.mean(a == b) >= 0.99


@pytest.mark.parametrize("kind", ["conv", "float_conv"])
def test_densify_and_crd_to_dcr_keep_pixel_shuffle(kind):
    rng = np.random.default_rng(1)
    c = _conv(rng, 3, 12, groups=3, peak=20, kernel=(3, 3), pad=(1, 1))
    if kind == "float_conv":
        c = ir.FloatConv(weight=c.weight.astype(np.float32) * 0.01, bias=np.zeros(12, np.float32), groups=3,
                         **{**GEOMETRY, "kernel": (3, 3), "pad": (1, 1)})
    g = _graph([_t("image", 3), _t("u", 12, 0.01, 128), _t("sr", 3, 0.01, 128)],
               [ir.Node(kind, ["image"], "u", c), ir.Node("depth_to_space", ["u"], "sr", ir.DepthToSpace(blocksize=2))],
               "sr", scale=2)
    with pytest.raises(RuntimeError, match="no grouped conv feeds a depth_to_space"):
        run_passes(g, [crd_to_dcr.PASS], ExportOptions())  # the wrong order is caught
    d = _check(dense.PASS, g)
    assert d.nodes[0].attrs.groups == 1 and d.nodes[0].attrs.weight.shape == (12, 3, 3, 3)
    out = _check(crd_to_dcr.PASS, d)
    assert out.nodes[1].attrs.mode == "DCR"
    _same_values(g, out)


def test_crd_to_dcr_refuses_a_shared_input():
    g = _graph([_t("image", 12), _t("sr", 3), _t("sr2", 3)],
               [ir.Node("depth_to_space", ["image"], "sr", ir.DepthToSpace(blocksize=2))], "sr")
    with pytest.raises(ir.UnsupportedOp, match="not a conv feeding only it"):
        crd_to_dcr.run(g)


def test_widen_keeps_values_and_is_idempotent():
    rng = np.random.default_rng(2)
    g = _graph([_t("image", 3), _t("y", 6, 0.01, 128)], [ir.Node("conv", ["image"], "y", _conv(rng, 3, 6, peak=7))], "y")
    assert widen.WIDENED.violations(g) == ["y"]
    out = _check(widen.PASS, g)
    assert np.abs(out.nodes[0].attrs.weight.astype(int)).max() > 64
    assert widen.run(out).nodes[0].attrs.weight.tobytes() == out.nodes[0].attrs.weight.tobytes()
    _same_values(g, out)
    packed = pack_int4.run(_graph([_t("image", 3), _t("y", 6, 0.01, 128)],
                                  [ir.Node("conv", ["image"], "y", _conv(rng, 3, 6, peak=7, bits=4))], "y"),
                           ExportOptions(format="tflite", target="litert-builtin", int4="packed"))
    assert widen.run(packed).nodes[0].attrs.weight.tobytes() == packed.nodes[0].attrs.weight.tobytes()


@pytest.mark.parametrize("groups", [1, 3])
def test_u8s8_weights_restore_only_saturating_convs(groups):
    rng = np.random.default_rng(3)
    g = _graph([_t("image", 3), _t("a", 6, 0.01, 128), _t("y", 6, 0.01, 128), _t("z", 6, 0.01, 128)],
               [ir.Node("conv", ["image"], "a", _conv(rng, 3, 6, groups=groups, peak=127)),
                ir.Node("conv", ["a"], "y", _conv(rng, 6, 6, peak=60)),
                ir.Node("conv", ["y"], "z", _conv(rng, 6, 6, groups=6, peak=127))], "z")
    out = _check(u8s8_weights.PASS, g)
    assert [n.attrs.storage for n in out.nodes] == ["uint8", "int8", "int8"]  # depthwise never saturates
    assert out.nodes[0].attrs.groups == 1
    _same_values(g, out)


@pytest.mark.parametrize("c_in", [3, 6])
def test_pair_safe_spreads_only_overflowing_convs_and_keeps_values(c_in):
    """Odd and even channel counts: the conv at risk reads its input twice, every pair of
    adjacent input channels holds at most one nonzero weight, the values stay (0 steps)."""
    rng = np.random.default_rng(8)
    g = _graph([_t("image", 3), _t("a", c_in, 0.01, 128), _t("y", 6, 0.01, 128), _t("z", 6, 0.01, 128),
                _t("d", 6, 0.01, 128)],
               [ir.Node("conv", ["image"], "a", _conv(rng, 3, c_in, peak=40, kernel=(3, 3), pad=(1, 1))),
                ir.Node("conv", ["a"], "y", _conv(rng, c_in, 6, peak=127, kernel=(3, 3), pad=(1, 1))),
                ir.Node("conv", ["y"], "z", _conv(rng, 6, 6, groups=6, peak=127)),
                ir.Node("conv", ["z"], "d", _conv(rng, 6, 6, groups=3, peak=127))], "d")
    assert pair_safe.NO_PAIR_OVERFLOW.violations(g) == ["y", "d"]  # 40 + 40 <= 128; depthwise never pairs
    out = _check(pair_safe.PASS, g)
    assert [n.op for n in out.nodes] == ["conv", "tile", "conv", "conv", "tile", "conv"]
    for n in (out.nodes[2], out.nodes[5]):
        w = n.attrs.weight
        assert n.attrs.groups == 1 and w.shape[1] == 2 * out.tensor(out.nodes[out.nodes.index(n) - 1].inputs[0]).channels
        assert ((w[:, 0::2] != 0) & (w[:, 1::2] != 0)).sum() == 0
    _same_values(g, out)


def test_pack_int4_follows_the_option():
    rng = np.random.default_rng(4)
    g = _graph([_t("image", 3), _t("a", 6, 0.01, 128), _t("y", 6, 0.01, 128)],
               [ir.Node("conv", ["image"], "a", _conv(rng, 3, 6, peak=7, bits=4)),
                ir.Node("conv", ["a"], "y", _conv(rng, 6, 6, peak=100))], "y")
    assert pack_int4.run(g, ExportOptions()) is g
    packed = ExportOptions(format="tflite", target="litert-builtin", int4="packed")
    assert [n.attrs.storage for n in pack_int4.run(g, packed).nodes] == ["int4", "int8"]


def test_conv_add_copy_puts_a_copy_between_every_conv_and_its_add():
    rng = np.random.default_rng(5)
    g = _graph([_t("image", 3), _t("a", 3, 0.01, 128), _t("b", 3, 0.02, 128), _t("y", 3, 0.03, 128)],
               [ir.Node("conv", ["image"], "a", _conv(rng, 3, 3)),
                ir.Node("add", ["a", "image"], "b", ir.Add()),
                ir.Node("add", ["b", "a"], "y", ir.Add())], "y")
    assert conv_add_copy.NO_CONV_INTO_ADD.violations(g) == ["b", "y"]
    out = _check(conv_add_copy.PASS, g)
    assert [n.op for n in out.nodes] == ["conv", "max_pool", "add", "add"]  # one copy, read twice
    assert out.nodes[2].inputs == ["a.copy", "image"] and out.nodes[3].inputs == ["b", "a.copy"]
    assert out.tensor("a.copy").same_grid(out.tensor("a"))
    _same_values(g, out)


def test_run_passes_checks_requires_and_ensures():
    broken = Pass("broken", lambda g, o: g, ensures=(Property("no tile", lambda g: [n.name for n in g.nodes
                                                                                  if n.op == "tile"]),))
    g = _graph([_t("image", 3), _t("rep", 6)], [ir.Node("tile", ["image"], "rep", ir.Tile(times=2))], "rep")
    with pytest.raises(RuntimeError, match="after pass broken: 'no tile' does not hold for rep"):
        run_passes(g, [broken], ExportOptions())


def _requants(seed=3, n=6, c=12):
    """Identity requantisations of ``c`` channels between random grids, after ``widen`` (as
    the LiteRT targets run them)."""
    rng = np.random.default_rng(seed)
    tensors, nodes = [_t("image", 3)], []
    for k in range(n):
        sx, sy = (float(np.float32(v)) for v in rng.uniform(0.004, 0.05, 2))
        tensors += [_t(f"x{k}", c, sx, 128), _t(f"y{k}", c, sy, 128)]
        nodes.append(ir.Node("requant", [f"x{k}"], f"y{k}", ir.Requant(), f"r{k}"))
    g = _graph(tensors, nodes, "y0")
    return run_passes(g, [requant_as_conv.PASS, widen.PASS], ExportOptions())


def test_pointwise_exact_makes_every_requant_exact_in_every_litert_kernel():
    g = _requants()
    before = pointwise_exact.inexact(g)
    assert before  # builtin's two roundings miss some level of some of them (the test can fail)
    out = _check(pointwise_exact.PASS, g)
    # A level whose exact result lies closer to a tie than the first rounding's quantum has
    # no exact representation with an int8 weight (r2 here: 19.4984 steps), nor with a bias
    # nudged away from it (its neighbours lie too near ties of their own); the rest are fixed.
    # r2 is written as a dense 1x1 conv, which aarch64 runs in ruy (one rounding): exact there
    # and in XNNPACK, and on x86 (ruy's two roundings) as inexact as before.
    after = pointwise_exact.inexact(out)
    assert set(after) < set(before) and after == {"r2": 12}
    assert pointwise_exact.inexact(out, ("litert-builtin",)) == {"r2": 12}
    r2 = next(n for n in out.nodes if n.name == "r2")
    assert pointwise_exact.diagonal(out, r2) and not pointwise_exact.pointwise(out, r2)
    for n0, n1 in zip(g.nodes, out.nodes):  # the same map: every level's exact result is unchanged
        xt, yt = g.tensor(n0.inputs[0]), g.tensor(n0.output)
        want = pointwise_exact.tables(xt, yt, n0.attrs, ("pytorch",))["pytorch"]
        got = pointwise_exact.tables(xt, yt, n1.attrs)
        if n0.name in after:
            got.pop("litert-builtin")
        assert all(np.array_equal(v, want) for v in got.values()), n0.name
    assert sum(not np.array_equal(a.attrs.weight, b.attrs.weight) or not np.array_equal(a.attrs.w_scale, b.attrs.w_scale)
               for a, b in zip(g.nodes, out.nodes)) == len(before)


def test_pointwise_exact_writes_dense_only_where_that_is_exacter():
    # A depthwise conv exact everywhere stays depthwise (a dense one costs C times the MACs);
    # one whose channels no representation fixes goes dense only for the LiteRT pass, not
    # for OpenVINO's (whose CPU plugin rounds a dense conv otherwise again).
    g = _requants()
    for arithmetics, dense in ((pointwise_exact.ARITHMETICS, {"r2"}), (("openvino",), set())):
        out = pointwise_exact.run(g, ExportOptions(), arithmetics)
        assert {n.name for n in out.nodes if pointwise_exact.diagonal(out, n)} == dense


def test_pointwise_exact_nudges_a_biased_channel_to_the_same_table():
    # A BatchNorm's bias pins its weight; the bias moved by a unit or two (or another weight
    # with the rounded bias) keeps every level's exact result and rounds right in LiteRT.
    rng = np.random.default_rng(0)
    conv = _conv(rng, 8, 8, groups=8)
    g = _graph([_t("image", 3), _t("x", 8, 0.02, 128), _t("y", 8, 0.03, 128)],
               [ir.Node("conv", ["x"], "y", conv, "bn")], "y")
    assert pointwise_exact.inexact(g) == {"bn": 2}  # the test can fail
    out = _check(pointwise_exact.PASS, g)
    assert pointwise_exact.inexact(out) == {}
    xt, yt = g.tensor("x"), g.tensor("y")
    want = pointwise_exact.tables(xt, yt, conv, ("pytorch",))["pytorch"]
    assert all(np.array_equal(v, want) for v in pointwise_exact.tables(xt, yt, out.nodes[0].attrs).values())
    moved = out.nodes[0].attrs.bias != conv.bias
    assert moved.sum() == 2 and np.abs(out.nodes[0].attrs.bias.astype(int) - conv.bias)[moved].max() <= 2




def _openvino_inexact_batchnorm(c=512):
    """A depthwise 1x1 conv with a bias of which OpenVINO computes some channel's table
    otherwise (a near-tie in its roundings is rare: the first such of a few draws)."""
    rng = np.random.default_rng(2)
    xt, yt = _t("x", c, 0.02, 128), _t("y", c, 0.03, 128)
    for _ in range(10):
        conv = ir.Conv(weight=rng.integers(-127, 128, (c, 1, 1, 1)).astype(np.int8),
                       w_scale=rng.uniform(1e-3, 4e-3, c).astype(np.float32),
                       bias=rng.integers(-30000, 30000, c).astype(np.int32), w_bits=8, groups=c, **GEOMETRY)
        if not pointwise_exact.exact_channels(xt, yt, conv, pointwise_exact.Check(("openvino",))).all():
            return xt, yt, conv
    raise AssertionError("no draw is inexact in OpenVINO")


def test_pointwise_exact_in_openvinos_arithmetic_for_the_openvino_target():
    # OpenVINO requantises a BatchNorm conv in three float32 roundings; the pass checks and
    # fixes its table in that arithmetic, in the conv's context (a FakeQuantize fused after
    # it, as a sigmoid reading it brings, changes the form).
    xt, yt, conv = _openvino_inexact_batchnorm()
    c = conv.c_out
    for consumer in (None, "sigmoid"):
        tensors = [_t("image", 3), xt, yt]
        nodes = [ir.Node("conv", ["x"], "y", conv, "bn")]
        if consumer:
            tensors.append(_t("z", c, 1 / 256))
            nodes.append(ir.Node("sigmoid", ["y"], "z", ir.Sigmoid(), "mask"))
        g = _graph(tensors, nodes, "z" if consumer else "y")
        assert pointwise_exact.inexact(g, ("openvino",)).get("bn")
        out = _check(pointwise_exact.OPENVINO_PASS, g)
        assert pointwise_exact.inexact(out, ("openvino",)) == {}
        levels = np.arange(256).reshape(1, 1, 1, -1).repeat(c, axis=1)
        want = reference.ARITHMETIC["pytorch"]["conv"](g, g.nodes[0], {"x": levels})
        for name in ("pytorch", "openvino"):  # the exact table, in OpenVINO's kernel in this graph
            assert np.array_equal(reference.ARITHMETIC[name]["conv"](out, out.nodes[0], {"x": levels}), want), name
        fused = pointwise_exact.tables(xt, yt, out.nodes[0].attrs, ("openvino",), fused_after=bool(consumer))
        assert np.array_equal(fused["openvino"], want[0, :, 0, :])
