"""Conv weight steps snapped at calibration: OpenVINO's three-rounding requantisation equals
the exact one on every accumulator of every learned conv's window (0 accumulators differ,
checked whole), the stored integers unchanged."""
import numpy as np
import pytest
import torch

from qnas_deploy.calibrate import calibrate
from qnas_deploy.exporters import conv_scales, ir, reference
from qnas_deploy.exporters.add_scales import openvino_lowered
from qnas_deploy.exporters.arithmetic import exact, litert, openvino
from qnas_deploy.exporters.builder import lower_model
from qnas_deploy.ops import QConv2d
from qnas_deploy.spaces import build_model
from qnas_deploy.zoo import load_zoo


def _calibrated(name, exact_adds, seed=0):
    """An initialised network with small random biases (a trained conv has them; OpenVINO
    keeps such a conv dequantised, the form the snap checks), calibrated."""
    torch.manual_seed(seed)
    m = build_model(load_zoo(name))
    with torch.no_grad():
        for conv in m.modules():
            if isinstance(conv, QConv2d) and conv.bias is not None and conv_scales.learned(conv):
                conv.bias.uniform_(-0.05, 0.05)
    calibrate(m, [torch.rand(2, 3, 24, 24) for _ in range(2)], exact_adds=exact_adds)
    return m


def test_window_holds_every_accumulator_that_is_not_clipped():
    rng = np.random.default_rng(0)
    xt, yt = ir.Tensor("x", 6, 0.02, 7, 0, 255), ir.Tensor("y", 4, 0.05, 128, 0, 255)
    a = ir.Conv(weight=rng.integers(-127, 128, (4, 6, 3, 3)).astype(np.int8),
                w_scale=rng.uniform(1e-3, 4e-3, 4).astype(np.float32), bias=rng.integers(-900, 900, 4).astype(np.int32),
                w_bits=8, stride=1, pad=(1, 1), dilation=1, groups=1, kernel=(3, 3))
    g = ir.Graph({"x": xt, "y": yt}, [], "x", "y", 1)
    node = ir.Node("conv", ["x"], "y", a)
    lo, hi = conv_scales.window(xt, yt, a)
    x = rng.integers(0, 256, (4, 6, 16, 16))
    x[0] = 0  # the extremes: every input at one end
    x[1] = 255
    acc = exact.accumulate(g, node, {"x": x}) - a.bias.reshape(1, -1, 1, 1)
    q = exact.conv(g, node, {"x": x})
    inside = (q > yt.qmin) & (q < yt.qmax)
    assert inside.any() and (~inside).any()
    c = np.broadcast_to(np.arange(4).reshape(1, -1, 1, 1), acc.shape)
    assert np.all((acc >= lo[c]) & (acc <= hi[c]) | ~inside)


def test_mismatches_is_openvinos_conv_kernel_on_each_accumulator():
    # The one-channel table the snap checks is what the kernel computes in a graph.
    rng = np.random.default_rng(3)
    c, n = 8, 300000
    xt, yt = ir.Tensor("x", c, 0.01, 0, -2**30, 2**30), ir.Tensor("y", c, 0.043, 121, 0, 255)
    a = ir.Conv(weight=np.ones((c, 1, 1, 1), np.int8), w_scale=rng.uniform(1e-3, 4e-3, c).astype(np.float32),
                bias=rng.integers(-900, 900, c).astype(np.int32), w_bits=8, stride=1, pad=(0, 0), dilation=1,
                groups=c, kernel=(1, 1))
    acc = np.broadcast_to(np.arange(-n, n).reshape(1, 1, 1, -1), (1, c, 1, 2 * n))
    g = ir.Graph({"x": xt, "y": yt}, [], "x", "y", 1)
    node = ir.Node("conv", ["x"], "y", a)
    got, want = openvino.conv(g, node, {"x": acc}), exact.conv(g, node, {"x": acc})
    for k in range(c):
        assert conv_scales.channel_mismatches(xt, yt, a, k, -n, n - 1, arm=False) == int((got != want)[0, k].sum())
    assert (got != want).any()  # a few near-ties in 600000 (the test can fail)


def test_mismatches_add_aarch64_litert_ruy_kernel_for_a_conv_that_is_not_grouped():
    # A conv with groups 1 runs in ruy on aarch64 (one rounding by a 31-bit multiplier, which
    # parts from the float32 one near ties too): the table counts where either kernel differs.
    rng = np.random.default_rng(4)
    c, n = 8, 300000
    xt, yt = ir.Tensor("x", 1, 0.01, 0, -2**30, 2**30), ir.Tensor("y", c, 0.043, 121, 0, 255)
    a = ir.Conv(weight=np.ones((c, 1, 1, 1), np.int8), w_scale=rng.uniform(1e-3, 4e-3, c).astype(np.float32),
                bias=rng.integers(-900, 900, c).astype(np.int32), w_bits=8, stride=1, pad=(0, 0), dilation=1,
                groups=1, kernel=(1, 1))
    x = np.arange(-n, n).reshape(1, 1, 1, -1)
    g = ir.Graph({"x": xt, "y": yt}, [], "x", "y", 1)
    node = ir.Node("conv", ["x"], "y", a)
    want = exact.conv(g, node, {"x": x})
    ov, arm = openvino.conv(g, node, {"x": x}) != want, litert.conv_aarch64(g, node, {"x": x}) != want
    assert arm.any() and (arm & ~ov).any()  # ruy's near-ties are not OpenVINO's (the test can fail)
    for k in range(c):
        assert conv_scales.channel_mismatches(xt, yt, a, k, -n, n - 1) == int((ov | arm)[0, k].sum())
        assert conv_scales.channel_mismatches(xt, yt, a, k, -n, n - 1, arm=False) == int(ov[0, k].sum())


def test_calibration_makes_every_learned_conv_exact_in_openvino_and_aarch64_ruy():
    before = _calibrated("rfdn_mixed", exact_adds=False)
    after = _calibrated("rfdn_mixed", exact_adds=True)
    assert conv_scales.inexact(before)  # without the snap, some differ (the test can fail)
    assert conv_scales.inexact(after) == {}
    # the integers the runtime holds stay; the steps move by a few float32 ulps
    convs_b, convs_a = {}, {}
    gb = lower_model(before, convs=convs_b)
    ga = lower_model(after, convs=convs_a)
    moved = 0
    for nb, na in zip(gb.nodes, ga.nodes):
        if nb.op == "conv" and conv_scales.learned(convs_b.get(nb.output)):
            assert np.array_equal(nb.attrs.weight, na.attrs.weight)
            rel = np.abs(na.attrs.w_scale.astype(np.float64) / nb.attrs.w_scale - 1)
            moved += int((rel > 0).sum())
            assert rel.max() <= conv_scales.MAX_ULPS * 2.0 ** -23
    assert moved


def test_esa_upsampling_stays_and_the_anchor_moves():
    # ESA's upsampling (integer bilinear weights, a fixed step, a half-up bias) has its ties
    # where every runtime rounds them alike, on purpose; the bicubic anchor's fixed conv (no
    # bias) is checked and moved like a learned one.
    for name, fixed_ok, moved_ok in (("rfdn_mixed", "esa.up", False), ("mobile_w8a8", "anchor", True)):
        model = _calibrated(name, exact_adds=False)
        convs = {}
        g = lower_model(model, convs=convs)
        fixed = {n.output: conv_scales.movable(convs[n.output], n.attrs) for n in g.nodes
                 if n.output in convs and not conv_scales.learned(convs[n.output])}
        assert fixed and all(fixed_ok in k and v == moved_ok for k, v in fixed.items()), fixed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["basic_mixed", "mobile_w8a8", "rfdn_mixed"])
def test_openvino_file_of_a_snapped_model_equals_pytorch(name):
    # End to end in the numpy OpenVINO arithmetic: adds, muls, BatchNorms and convs all exact.
    model = _calibrated(name, exact_adds=True, seed=1)
    from qnas_deploy.exporters.options import ExportOptions
    from qnas_deploy.exporters.export import lower

    g = lower(model, ExportOptions(format="onnx", target="openvino"))
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 40, 44), dtype=np.uint8)
    assert np.array_equal(reference.run(g, x, "openvino"), reference.run(lower_model(model), x))


def test_openvino_export_names_what_a_checkpoint_left_inexact(tmp_path):
    """A checkpoint calibrated before the snaps: the openvino export names the convs (and
    adds) OpenVINO rounds otherwise and how to fix them; a snapped one exports without."""
    from qnas_deploy.checkpoint import save_checkpoint
    from qnas_deploy.exporters.export import export

    for snapped, hinted in ((False, True), (True, False)):
        m = _calibrated("basic_mixed", snapped)
        ck = tmp_path / f"{snapped}.pt"
        save_checkpoint(ck, m.spec, m, calibrated=True)
        lines = []
        export(str(ck), tmp_path / f"{snapped}.onnx", "onnx", target="openvino", log=lines.append)
        assert any("--calib" in l and "OpenVINO" in l for l in lines) == hinted, lines


def test_one_channel_of_a_conv_without_bias_uses_the_whole_convs_constants():
    # Without a bias OpenVINO shares channel 0's FakeQuantize shift: the snap's one-channel
    # table (channel_mismatches) is the whole conv's row.
    rng = np.random.default_rng(5)
    c = 6
    xt, yt = ir.Tensor("x", c, 0.01, 0, -2**30, 2**30), ir.Tensor("y", c, 0.043, 121, 0, 255)
    a = ir.Conv(weight=np.ones((c, 1, 1, 1), np.int8), w_scale=rng.uniform(1e-3, 4e-3, c).astype(np.float32),
                bias=None, w_bits=8, stride=1, pad=(0, 0), dilation=1, groups=c, kernel=(1, 1))
    lo, hi = np.full(c, -200000), np.full(c, 199999)
    whole = conv_scales.conv_mismatches(xt, yt, a, lo, hi)
    assert whole.any()  # the test can fail
    assert [conv_scales.channel_mismatches(xt, yt, a, k, lo[k], hi[k]) for k in range(c)] == list(whole)
