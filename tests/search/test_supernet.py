"""The supernet: alphas, SAN's quantization noise, the BitMixer modes and derivation."""
import pytest
import torch

from qnas_deploy.quant import quant_noise
from qnas_deploy.search import MODES, Supernet, qnoise_scale
from qnas_deploy.spaces import build_model


def test_alphas_are_on_the_simplex_of_ops_by_bits():
    net = Supernet("basic", (4, 8), "san", channels=6, blocks=1)
    for m in net.mixed.values():
        with torch.no_grad():
            m.alpha_logits.normal_()
        a = m.alphas()
        assert (a >= 0).all() and abs(float(a.detach().sum()) - 1) < 1e-6
        assert a.shape == (len(m.ops), 2)


@pytest.mark.parametrize("bits", [4, 8])
def test_san_noise_scale_is_eq6(bits):
    w = torch.randn(16, 8, 3, 3)
    s = qnoise_scale(w, bits, per_channel=False)
    delta = (w.max() - w.min()) / (2 ** bits - 1)
    assert torch.allclose(s, delta / 2)
    # the core's eq. 6 sampler has the same standard deviation
    g = torch.Generator().manual_seed(0)
    samples = torch.stack([quant_noise(w, bits, g) for _ in range(50)])
    assert abs(float(samples.std() / s) - 1) < 0.02
    per_ch = qnoise_scale(w, bits, per_channel=True)
    assert per_ch.shape == (16, 1, 1, 1)
    assert torch.allclose(per_ch[3, 0, 0, 0], (w[3].max() - w[3].min()) / (2 ** bits - 1) / 2)
    assert float(qnoise_scale(w, 32, per_channel=False)) == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_modes_run_and_derive(mode):
    net = Supernet("rfdn" if mode == "san" else "basic", (4, 8), mode, channels=12, blocks=1)
    net.train()
    y = net(torch.rand(1, 3, 16, 16))
    y.mean().backward()
    assert all(p.grad is not None for p in net.alpha_parameters())
    spec = net.derive()
    build_model(spec)
    assert {l.w_bits for l in spec.layers} <= {4, 8}
