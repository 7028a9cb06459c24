"""The bicubic anchor: MATLAB's bicubic as one fixed conv, in the model and in the integer graph."""
import numpy as np
import pytest
import torch

from qnas_deploy import zoo
from qnas_deploy.anchor import Anchor, bicubic_kernel, bicubic_phase_weights
from qnas_deploy.imresize import imresize
from qnas_deploy.spaces import build_model


def _conv_upsample(img: np.ndarray, scale: int, kernel: np.ndarray) -> np.ndarray:
    """``HxWxC`` float image through the grouped conv (zero padding) and PixelShuffle."""
    x = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    y = torch.nn.functional.conv2d(x, torch.from_numpy(kernel), padding=2, groups=img.shape[2])
    return torch.nn.functional.pixel_shuffle(y, scale)[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_conv_is_matlab_imresize_away_from_the_border(scale):
    """Exact (float64) wherever the 4 taps stay inside the image: ``imresize`` mirrors at
    the border where the conv pads zeros, and the taps reach 2 LR pixels out."""
    rng = np.random.default_rng(scale)
    img = rng.random((11, 13, 3))
    ours = _conv_upsample(img, scale, bicubic_kernel(scale))
    ref = imresize(img, float(scale))
    m = 2 * scale
    np.testing.assert_allclose(ours[m:-m, m:-m], ref[m:-m, m:-m], rtol=0, atol=1e-12)


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
    i.e. MATLAB bicubic away from the border."""
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
    np.testing.assert_allclose(y[8:-8, 8:-8], ref[8:-8, 8:-8], atol=1e-5)


def test_anchor_starts_small_network_contribution():
    """With an anchor the upsample and last tail convs start at a tenth of the usual init."""
    torch.manual_seed(0)
    plain = build_model(zoo.load_zoo("basic_mixed"))
    torch.manual_seed(0)
    anchored = build_model(zoo.load_zoo("basic_mixed_bicubic"))
    for key in ("upsample", "tail_1"):
        for a, b in zip(plain.layers[key], anchored.layers[key]):
            torch.testing.assert_close(b.weight, a.weight * 0.1)


def test_supernet_searches_with_the_bicubic_anchor():
    """The search builds the anchor into the supernet and keeps it in the derived spec."""
    from qnas_deploy.search.supernet import Supernet
    net = Supernet("basic", (4, 8), channels=12, blocks=1, anchor="bicubic")
    out = net(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 3, 32, 32)
    assert net.derive().anchor == "bicubic"
    assert not any(p is net.net.anchor.conv.weight for p in net.weight_parameters())
