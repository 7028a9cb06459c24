"""Quantizer modules: the grids an integer runtime holds, calibration and freezing."""
import numpy as np
import pytest
import torch

from qnas_deploy.quant import HWGQAct, LSQWeightPerChannel, Uint8AffineTensor, hwgq_step


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lsq_weights_are_symmetric_per_channel_integers(bits):
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    q = LSQWeightPerChannel(bits, 6)
    wq = q(w)
    ints = q.integer_weight(w)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    assert ints.min() >= lo and ints.max() <= hi
    torch.testing.assert_close(wq, ints.float() * q.step.detach(), rtol=1e-6, atol=1e-8)
    assert q.step.shape == (6, 1, 1, 1)


def test_lsq_negative_step_is_the_same_grid():
    """A step that training carried through zero quantizes on ``|step|``: the same values,
    the same integers (including the most negative one, which a sign flip at export
    could not store), and a gradient that still reaches the step."""
    w = torch.tensor([[-1.28, 0.5, 1.27, 0.011]]).reshape(1, 4, 1, 1)
    pos, neg = LSQWeightPerChannel(8, 1), LSQWeightPerChannel(8, 1)
    with torch.no_grad():
        pos.step.fill_(0.01), neg.step.fill_(-0.01)
        pos.initialized.fill_(True), neg.initialized.fill_(True)
    torch.testing.assert_close(neg(w), pos(w))
    assert torch.equal(neg.integer_weight(w), pos.integer_weight(w))
    assert neg.integer_weight(w).min() == -128
    neg(w).sum().backward()
    assert neg.step.grad is not None and torch.isfinite(neg.step.grad).all()


def test_lsq_step_is_learned():
    w = torch.randn(2, 3, 3, 3)
    q = LSQWeightPerChannel(4, 2)
    q(w).pow(2).sum().backward()
    assert q.step.grad is not None and torch.isfinite(q.step.grad).all() and q.step.grad.abs().sum() > 0


def test_float_bits_are_identity():
    w = torch.randn(2, 3, 3, 3)
    assert torch.equal(LSQWeightPerChannel(32, 2)(w), w)
    assert torch.equal(HWGQAct(32)(w), torch.relu(w))
    assert torch.equal(Uint8AffineTensor(True, bits=32)(w), w)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_hwgq_act_scales_its_step_to_the_tensor(bits):
    torch.manual_seed(1)
    x = 3.0 * torch.randn(8, 4, 16, 16)
    act = HWGQAct(bits)
    y = act(x)
    step = act.step.item()
    assert abs(step / (hwgq_step(bits) * 3.0) - 1) < 0.02
    q = torch.round(y / step)
    assert q.min() == 0 and q.max() <= 2**bits - 1
    torch.testing.assert_close(y, q * step, rtol=0, atol=1e-6)


def test_hwgq_act_freezes_in_eval():
    act = HWGQAct(4)
    act(torch.randn(100))
    sigma = act.sigma.clone()
    act.eval()
    act(100 * torch.randn(100))
    assert torch.equal(act.sigma, sigma)


def test_signed_tensor_quantizer_uses_zero_point_128():
    q = Uint8AffineTensor(signed=True)
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.27])
    y = q(x)
    assert q.zero_point == 128
    scale = q.scale.item()
    assert abs(scale - 2.0 / 127) < 1e-7
    ints = torch.round(y / scale) + 128
    assert ints.min() >= 0 and ints.max() <= 255
    assert y[2] == 0.0  # zero is exact: padding and ReLU thresholds map to integers


def test_input_quantizer_is_lossless_for_uint8_images():
    q = Uint8AffineTensor(signed=False, fixed_scale=1 / 255)
    pixels = torch.arange(256, dtype=torch.float32)
    x = pixels / 255
    # The same integers come back; the floats agree to one float32 ulp.
    np.testing.assert_array_equal(torch.round(q(x) * 255).numpy(), pixels.numpy())
    np.testing.assert_allclose(q(x).numpy(), x.numpy(), rtol=2e-7, atol=0)


def test_output_quantizer_clamps_and_rounds_to_1_over_255():
    q = Uint8AffineTensor(signed=False, fixed_scale=1 / 255)
    y = q(torch.tensor([-0.2, 0.2, 1.3, 0.1 / 255]))
    np.testing.assert_array_equal(torch.round(y * 255).numpy(), [0, 51, 255, 0])
    np.testing.assert_allclose(y.numpy(), [0.0, 51 / 255, 1.0, 0.0], atol=1e-7)


def test_tensor_quantizer_tracks_range_then_freezes():
    q = Uint8AffineTensor(signed=True, momentum=0.5)
    q(torch.tensor([1.0]))
    q(torch.tensor([3.0]))
    assert abs(q.absmax.item() - 2.0) < 1e-6
    q.eval()
    q(torch.tensor([100.0]))
    assert abs(q.absmax.item() - 2.0) < 1e-6
    assert abs(q.frozen(torch.tensor([5.0])).item() - 2.0 * 127 / 127) < 1e-6


@pytest.mark.parametrize("make", [lambda: Uint8AffineTensor(signed=True), lambda: HWGQAct(8)])
def test_hold_requantises_only_onto_a_frozen_grid(make):
    """A conv accumulator is held on the quantizer's grid (one rounding, clipped) only in
    inference with a measured range; while the quantizer measures (training, calibration,
    ADQ's BN included) it gets the real values, or its range could never grow."""
    from qnas_deploy.quant import functional as F

    q = make()
    with torch.no_grad():
        q(torch.linspace(-0.1, 0.1, 101))  # a small range: the accumulator below overflows it
    acc = torch.arange(-30000, 30001, 100, dtype=torch.float64).reshape(1, 1, -1, 1)
    s_in, s_w = torch.tensor(0.01), torch.tensor([0.02])
    real = F.scale_accumulator(acc, s_in, s_w)
    q.train()
    assert torch.equal(q.hold(acc, s_in, s_w), real)
    q.eval()
    held = q.hold(acc, s_in, s_w)
    assert held.max() < real.max()
    scale = q.step if isinstance(q, HWGQAct) else q.scale
    assert torch.equal(q(held), held) and torch.allclose(held / scale, torch.round(held / scale), atol=1e-4)


def test_adq_bn_calibrates_on_unclipped_values():
    from qnas_deploy.adq import ADQ

    torch.manual_seed(0)
    adq = ADQ(4, "static").eval()
    x = torch.round(torch.randn(1, 4, 8, 8) * 40) * 0.05
    with torch.no_grad():
        adq.bn_quant.absmax.fill_(1e-3)
        adq.bn_quant.initialized.fill_(True)
        adq.bn_quant.train()  # calibration: the quantizer measures while ADQ runs in inference
        adq.normalize(x, torch.tensor(0.05))
    assert float(adq.bn_quant.absmax) > 0.1


@pytest.mark.parametrize("make", [lambda: HWGQAct(8), lambda: Uint8AffineTensor(signed=True)],
                         ids=["hwgq", "uint8_affine"])
def test_quantizers_stay_float32_under_autocast(make):
    """Mixed-precision training: a bfloat16 input is quantized in float32 onto the same grid
    as without autocast (in bfloat16 ``x / step`` near 200 steps is off by a whole step)."""
    torch.manual_seed(0)
    x = (torch.randn(2, 4, 8, 8) * 3).bfloat16()
    plain, mixed = make(), make()
    want = plain(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mixed(x)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)
    step = plain.step if isinstance(plain, HWGQAct) else plain.scale
    k = got / step
    assert torch.allclose(k, k.round(), atol=1e-3)


def test_lsq_weights_stay_float32_under_autocast():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3)
    q = LSQWeightPerChannel(8, 6)
    want = q(w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = q(w)
    assert got.dtype == torch.float32 and torch.equal(got, want)
