"""Quantization math against numpy references: grids, ranges, rounding, gradients."""
import math

import numpy as np
import pytest
import torch

from qnas_deploy.quant import functional as F


@pytest.mark.parametrize("bits,signed,narrow,expected", [
    (8, True, False, (-128, 127)), (4, True, False, (-8, 7)), (2, True, False, (-2, 1)),
    (8, False, False, (0, 255)), (4, False, False, (0, 15)), (8, True, True, (-127, 127)),
])
def test_int_range(bits, signed, narrow, expected):
    assert F.int_range(bits, signed, narrow) == expected


def test_int_range_rejects_nonsense():
    with pytest.raises(ValueError):
        F.int_range(0, True)


def test_round_is_half_to_even_like_numpy():
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999997, 1.2, -1.7])
    np.testing.assert_array_equal(F.round_ste(x).numpy(), np.round(x.numpy()))


def _np_fake_quant(x, scale, zp, qmin, qmax):
    # ONNX QuantizeLinear then DequantizeLinear, in float32 as the runtimes compute it.
    x = x.astype(np.float32)
    q = np.clip(np.round(x / np.float32(scale)) + zp, qmin, qmax)
    return ((q - zp) * np.float32(scale)).astype(np.float32)


@pytest.mark.parametrize("bits,signed", [(8, True), (8, False), (4, False), (2, False)])
def test_fake_quant_matches_numpy(bits, signed):
    rng = np.random.default_rng(bits)
    x = rng.normal(0, 1, 4096).astype(np.float32)
    scale = 0.0371
    qmin, qmax = F.int_range(bits, signed=False)
    zp = 2 ** (bits - 1) if signed else 0
    got = F.fake_quant(torch.from_numpy(x), scale, zp, qmin, qmax).numpy()
    np.testing.assert_array_equal(got, _np_fake_quant(x, scale, zp, qmin, qmax))
    # Every output lies on the grid and inside the range.
    q = np.round(got / np.float32(scale)) + zp
    assert q.min() >= qmin and q.max() <= qmax
    np.testing.assert_allclose(got / np.float32(scale), q - zp, atol=1e-4)


def test_fake_quant_ste_gradient_is_one_inside_zero_outside():
    x = torch.tensor([-5.0, -0.3, 0.0, 0.7, 5.0], requires_grad=True)
    F.fake_quant(x, 0.1, 0, -10, 10).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 1, 1, 0])


def test_lsq_forward_and_gradients_match_the_lsq_paper():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.2, (3, 2, 3, 3)).astype(np.float32)
    step = np.array([0.05, 0.02, 0.1], np.float32).reshape(3, 1, 1, 1)
    qmin, qmax = F.int_range(4, signed=True)
    gs = F.lsq_grad_scale(w[0].size, qmax)
    wt = torch.from_numpy(w).requires_grad_()
    st = torch.from_numpy(step.copy()).requires_grad_()
    out = F.fake_quant_lsq(wt, st, qmin, qmax, gs)
    v = w / step
    ref = np.clip(np.round(v), qmin, qmax) * step
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=0, atol=1e-7)
    out.sum().backward()
    inside = (v > qmin) & (v < qmax)
    np.testing.assert_array_equal(wt.grad.numpy(), inside.astype(np.float32))
    # LSQ eq. 3: d(out)/d(step) = round(v) - v inside, qmin / qmax where clipped; times g.
    dstep = np.where(v <= qmin, qmin, np.where(v >= qmax, qmax, np.round(v) - v)) * gs
    np.testing.assert_allclose(st.grad.numpy(), dstep.sum(axis=(1, 2, 3), keepdims=True), rtol=1e-4, atol=1e-6)


def test_lsq_init_step():
    w = torch.tensor([[1.0, -1.0], [0.5, 0.25]]).reshape(2, 2, 1, 1)
    np.testing.assert_allclose(F.lsq_init_step(w, 7).flatten().numpy(),
                               [2 * 1.0 / math.sqrt(7), 2 * 0.375 / math.sqrt(7)], rtol=1e-6)


def _np_half_gaussian_mse(step, bits, n=400001):
    # Brute force: dense quadrature of E[(Q(relu x) - relu x)^2], x ~ N(0,1).
    x = np.linspace(0, 12, n)
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    q = np.clip(np.round(x / step), 0, 2**bits - 1) * step
    return np.trapezoid((q - x) ** 2 * pdf, x)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_hwgq_step_is_the_mse_optimum_for_a_half_gaussian(bits):
    s = F.hwgq_step(bits)
    mse = _np_half_gaussian_mse(s, bits)
    assert math.isclose(F._half_gaussian_mse(s, 2**bits - 1), mse, rel_tol=1e-4)
    for other in (s * 0.97, s * 1.03):
        assert _np_half_gaussian_mse(other, bits) > mse


def test_hwgq_steps_shrink_with_bits():
    steps = [F.hwgq_step(b) for b in (1, 2, 4, 8)]
    assert steps == sorted(steps, reverse=True)
    assert 0.6 < F.hwgq_step(2) < 0.7 and 0.015 < F.hwgq_step(8) < 0.025


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_hwgq_grid_is_unsigned_with_2b_levels(bits):
    step = 0.05
    top = step * 2**bits * 1.2
    x = torch.linspace(-top, top, 40001)
    y = F.hwgq(x, step, bits)
    levels = torch.unique(torch.round(y / step))
    assert levels.min() == 0 and levels.max() == 2**bits - 1
    assert len(levels) == 2**bits
    np.testing.assert_array_equal(y.numpy(), _np_fake_quant(np.maximum(x.numpy(), 0), step, 0, 0, 2**bits - 1))


@pytest.mark.parametrize("bits", [4, 8])
def test_quant_noise_scale_matches_eq6(bits):
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1.0, 3.0, 200_000)
    noise = F.quant_noise(x, bits, generator=g)
    delta = 4.0 / (2**bits - 1)
    assert abs(noise.std().item() - delta / 2) < 0.01 * delta
    assert abs(noise.mean().item()) < 0.01 * delta


def test_quant_noise_passes_gradient_unchanged():
    x = torch.randn(100, requires_grad=True)
    (x + F.quant_noise(x, 4)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(100, np.float32))


def test_requantize_rounds_once_like_the_runtime():
    """``round(f32(acc) * M)`` with ``M = f32(s_in * f32(s_w * mult)) / s_out`` (numpy
    reference), not the two roundings of dequantize-then-quantize, which differ near ties
    (the test checks that such accumulators exist in the range it covers)."""
    rng = np.random.default_rng(0)
    s_in, s_out, mult = np.float32(0.0213), np.float32(0.0517), np.float32(1.37)
    s_w = rng.uniform(1e-3, 2e-2, 64).astype(np.float32)
    acc = np.arange(-(2 ** 16), 2 ** 16, dtype=np.float64).reshape(1, 1, -1, 1).repeat(64, axis=1)
    lo, hi = -(2 ** 20), 2 ** 20  # wide, so that no value is clipped
    m = (s_in * (s_w * mult).astype(np.float32)).astype(np.float32) / s_out
    want = np.rint(acc.astype(np.float32) * m.reshape(1, -1, 1, 1)) + 3
    twice = np.rint(((acc.astype(np.float32) * (s_in * s_w).reshape(1, -1, 1, 1)) * mult) / s_out) + 3
    assert np.any(want != twice)
    got = F.requantize(torch.from_numpy(acc), torch.tensor(s_in), torch.from_numpy(s_w), torch.tensor(s_out),
                       3, lo, hi, torch.tensor(mult))
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), want)
    clipped = F.requantize(torch.from_numpy(acc), s_in, torch.from_numpy(s_w), s_out, 128, 0, 255)
    assert np.array_equal(clipped.numpy(), np.clip(np.rint(acc.astype(np.float32) * (
        (s_in * s_w) / s_out).astype(np.float32).reshape(1, -1, 1, 1)) + 128, 0, 255))
