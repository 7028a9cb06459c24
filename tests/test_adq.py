"""ADQ: out = body(BN(x)) * phi(std(x)) + x, static and dynamic inference."""
import torch

from qnas_deploy import zoo
from qnas_deploy.adq import ADQ
from qnas_deploy.spaces import build_model


def test_phi_is_affine_in_the_per_image_std():
    adq = ADQ(4)
    x = torch.randn(3, 4, 8, 8) * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
    s = adq.phi(x)
    expected = 1.5 * torch.std(x, dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(s, expected)


def test_static_scale_is_the_training_mean_and_constant_at_inference():
    adq = ADQ(4, "static", momentum=1.0)
    x = torch.randn(5, 4, 8, 8)
    s_train = adq.train().scale(x)
    assert s_train.shape == (5, 1, 1, 1)
    adq.eval()
    s_eval = adq.scale(torch.randn(2, 4, 8, 8) * 10)
    torch.testing.assert_close(s_eval.flatten(), s_train.mean().reshape(1))


def test_dynamic_scale_stays_per_image_at_inference():
    adq = ADQ(4, "dynamic").eval()
    x = torch.randn(2, 4, 8, 8) * torch.tensor([1.0, 4.0]).view(2, 1, 1, 1)
    s = adq.scale(x)
    assert s.shape == (2, 1, 1, 1) and s[1] > 2 * s[0]


def test_bn_uses_running_statistics_at_inference():
    adq = ADQ(4)
    adq.train()
    for _ in range(50):
        adq.normalize(torch.randn(8, 4, 6, 6) * 3 + 1)
    adq.eval()
    y = adq.normalize(torch.full((1, 4, 6, 6), 1.0))
    assert y.abs().max() < 0.2


def test_adq_off_builds_plain_residual_blocks():
    arch = zoo.load_zoo("basic_w8a8").with_(adq=False)
    model = build_model(arch)
    assert not any(isinstance(m, ADQ) for m in model.modules())
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
