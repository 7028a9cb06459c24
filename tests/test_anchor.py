"""The bicubic anchor: MATLAB's bicubic as one fixed conv, in the model and in the integer graph."""
import numpy as np
import pytest
import torch

from qnas_deploy import zoo
from qnas_deploy.anchor import Anchor, bicubic_kernel, bicubic_phase_weights, symmetric_pad
from qnas_deploy.imresize import imresize
from qnas_deploy.spaces import build_model


def _conv_upsample(img: np.ndarray, scale: int, kernel: np.ndarray) -> np.ndarray:
    """``HxWxC`` float image mirrored, through the grouped conv and PixelShuffle."""
    x = symmetric_pad(torch.from_numpy(img.transpose(2, 0, 1)[None].copy()), 2)
    y = torch.nn.functional.conv2d(x, torch.from_numpy(kernel), groups=img.shape[2])
    return torch.nn.functional.pixel_shuffle(y, scale)[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("shape", [(11, 13), (2, 3)])
def test_bicubic_conv_is_matlab_imresize_border_included(scale, shape):
    """Exact (float64) everywhere: the input is mirrored with the edge repeated, as
    ``imresize`` extends it, before the taps reach 2 LR pixels out."""
    img = np.random.default_rng(scale).random((*shape, 3))
    np.testing.assert_allclose(_conv_upsample(img, scale, bicubic_kernel(scale)), imresize(img, float(scale)),
                               rtol=0, atol=1e-12)


def test_symmetric_pad_is_numpys_and_refuses_tiny_images():
    a = np.random.default_rng(0).random((1, 2, 3, 4))
    want = np.pad(a, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="symmetric")
    assert np.array_equal(symmetric_pad(torch.from_numpy(a), 2).numpy(), want)
    with pytest.raises(ValueError, match="at least 2x2"):
        symmetric_pad(torch.zeros(1, 3, 1, 5), 2)


def test_bicubic_phase_weights_hand_checked():
    """x4, first phase: LR offset -0.375 from pixel y, cubic a = -0.5 at distances
    1.625, 0.625, 0.375, 1.375 (taps y-2..y+1); the tap at y+2 is outside the support."""
    def cubic(t):
        t = abs(t)
        return 1.5 * t ** 3 - 2.5 * t ** 2 + 1 if t <= 1 else -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
    want = [cubic(1.625), cubic(0.625), cubic(0.375), cubic(1.375), 0.0]
    np.testing.assert_allclose(bicubic_phase_weights(4)[0], want, atol=1e-15)
    np.testing.assert_allclose(bicubic_phase_weights(4).sum(axis=1), 1.0, atol=1e-15)


def test_anchor_weights_are_frozen_8_bit_within_half_a_step():
    a = Anchor("bicubic", 4)
    wq = a.conv.weight_quant
    k = torch.tensor(bicubic_kernel(4), dtype=torch.float32)
    q = wq.integer_weight(a.conv.weight).float() * wq.step
    assert (q - k).abs().le(wq.step / 2 + 1e-7).all()
    assert wq.integer_weight(a.conv.weight).abs().max() == 127
    assert not list(a.parameters())  # fixed: nothing to learn
    assert Anchor("bicubic", 4, tensor_bits=32).conv.weight_quant.enabled is False


def test_bicubic_anchor_model_starts_at_bicubic():
    """Float layers, upsample and last tail conv zeroed: the output is the anchor alone,
    i.e. MATLAB bicubic, border included."""
    spec = zoo.load_zoo("basic_mixed_bicubic")
    assert spec.anchor == "bicubic"
    model = build_model(spec.with_(layers=tuple(l.__class__(l.name, l.op, 32, 32) for l in spec.layers))).eval()
    img = np.random.default_rng(0).random((9, 10, 3)).astype(np.float32)
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        for key in ("upsample", "tail_1"):
            for p in model.layers[key].parameters():
                p.zero_()
        y = model(x)[0].numpy().transpose(1, 2, 0)
    ref = imresize(img.astype(np.float64), 4.0)
    np.testing.assert_allclose(y, ref, atol=1e-5)


def _anchor_only(zoo_model):
    """basic_mixed_bicubic, calibrated, then its upsample and last tail convs zeroed (their
    steps kept): the output is the 8-bit anchor on the anchored sum's grid."""
    m = zoo_model("basic_mixed_bicubic")
    with torch.no_grad():
        for key in ("upsample", "tail_1"):
            for conv in m.layers[key]:
                conv.weight.zero_()
                if conv.bias is not None:
                    conv.bias.zero_()
    return m


@pytest.mark.parametrize("value,shape", [(200, (24, 24)), (242, (7, 9)), (30, (2, 2))])
def test_flat_image_stays_flat_to_the_border(zoo_model, tmp_path, value, shape):
    """A flat grey image through the anchor comes out flat, border included, in PyTorch and
    in every exported file (zero padding made its border lines dark: 200 came out 135).
    Flat per sub-pixel phase: each phase's 8-bit taps sum to 1 only within their rounding,
    and the anchor's output and the anchored sum are on grids of a few grey levels, so a
    phase may sit up to one step of each off the input value; the border equals the
    interior, to the level, and every runtime gives the same pixels."""
    from qnas_deploy.exporters import reference
    from qnas_deploy.exporters.export import ExportOptions, compile_graph, canonical
    from qnas_deploy.runtimes.litert import TfliteModelRunner, interpreter
    from qnas_deploy.runtimes.onnxruntime import OnnxModelRunner, session

    m = _anchor_only(zoo_model)
    lr = np.full((*shape, 3), value, np.uint8)
    with torch.no_grad():
        y = m(torch.from_numpy(lr.transpose(2, 0, 1)[None].copy()).float() / 255)[0]
    outs = {"pytorch": torch.round(y.clamp(0, 1) * 255).numpy().astype(np.uint8).transpose(1, 2, 0)}
    graph = canonical(m, ExportOptions())
    outs["reference"] = reference.runner(graph)(lr)
    _, onnx_bytes = compile_graph(graph, ExportOptions())
    (tmp_path / "a.onnx").write_bytes(onnx_bytes)
    outs["onnxruntime"] = OnnxModelRunner(session(tmp_path / "a.onnx", threads=1))(lr)
    _, tfl = compile_graph(graph, ExportOptions(format="tflite", input_size=shape))
    for kernels in ("xnnpack", "builtin", "builtin-ref"):
        outs[kernels] = TfliteModelRunner(interpreter(tfl, threads=1, kernels=kernels), "uint8")(lr)
    for name, out in outs.items():
        assert out.shape == (4 * shape[0], 4 * shape[1], 3), name
        phases = out.reshape(shape[0], 4, shape[1], 4, 3)
        assert (phases == phases[:1, :, :1]).all(), name  # every pixel equals its phase's first one
        steps = 255 * (float(m.anchor.q_conv.scale) + float(m.q_anchor.scale))
        assert np.abs(out.astype(int) - value).max() <= steps, (name, out.min(), out.max(), steps)
    assert all(np.array_equal(out, outs["pytorch"]) for out in outs.values())


def test_anchor_starts_small_network_contribution():
    """With an anchor the upsample and last tail convs start at a thousandth of the usual
    init, and the network's first output is the anchor's within a few 8-bit steps (the
    branch at a tenth added about 0.65, and training silenced it: basic.py)."""
    torch.manual_seed(0)
    plain = build_model(zoo.load_zoo("basic_mixed"))
    torch.manual_seed(0)
    anchored = build_model(zoo.load_zoo("basic_mixed_bicubic"))
    for key in ("upsample", "tail_1"):
        for a, b in zip(plain.layers[key], anchored.layers[key]):
            torch.testing.assert_close(b.weight, a.weight * 1e-3)
    seen = {}
    anchored.layers["upsample"].register_forward_hook(lambda mod, i, o: seen.update(up=o.abs().mean()))
    anchored.train()
    with torch.no_grad():
        anchored(torch.rand(2, 3, 16, 16))
    assert seen["up"] < 0.02  # well below bicubic's own mean error (0.043)


def test_supernet_searches_with_the_bicubic_anchor():
    """The search builds the anchor into the supernet and keeps it in the derived spec."""
    from qnas_deploy.search.supernet import Supernet
    net = Supernet("basic", (4, 8), channels=12, blocks=1, anchor="bicubic")
    out = net(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 3, 32, 32)
    assert net.derive().anchor == "bicubic"
    assert not any(p is net.net.anchor.conv.weight for p in net.weight_parameters())
