"""Every zoo model and every registered operation builds, runs forward and backward."""
import pytest
import torch

from qnas_deploy import ops, spec as S, zoo
from qnas_deploy.ops import QConv2d, QOp
from qnas_deploy.spaces import SPACES, build_model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", zoo.names())
@pytest.mark.parametrize("hw", [(32, 32), (17, 23)])
def test_zoo_model_upscales_by_its_scale(name, hw):
    arch = zoo.load_zoo(name)
    model = build_model(arch)
    x = torch.rand(1, 3, *hw)
    model.train()
    assert model(x).shape == (1, 3, 4 * hw[0], 4 * hw[1])
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 4 * hw[0], 4 * hw[1])
    assert torch.isfinite(y).all()
    if not arch.float_only:
        # The output is an image: [0, 1] in steps of 1/255.
        assert y.min() >= 0 and y.max() <= 1
        torch.testing.assert_close(y * 255, torch.round(y * 255), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_backward_reaches_every_parameter(name):
    model = build_model(zoo.load_zoo(name)).train()
    out = model(torch.rand(2, 3, 24, 24))
    (out - torch.rand_like(out)).abs().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("space", sorted(SPACES))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_space_builds_for_scales_2_3_4(space, scale):
    sp = SPACES[space]
    arch = S.uniform(space, "simple_3x3", 8, scale=scale, adq=sp.has_adq)
    y = build_model(arch).eval()(torch.rand(1, 3, 16, 20))
    assert y.shape == (1, 3, 16 * scale, 20 * scale)


def test_float_spec_is_an_ordinary_network():
    arch = zoo.load_zoo("basic_fp32")
    model = build_model(arch).eval()
    y = model(torch.rand(1, 3, 16, 16))
    # No quantizer touches anything: the output is not on the 1/255 grid and not clamped.
    assert not torch.allclose(y * 255, torch.round(y * 255), atol=1e-3)
    assert all(getattr(m, "bits", 32) == 32 for m in model.modules() if hasattr(m, "bits"))


def test_layer_bits_come_from_the_spec():
    arch = zoo.load_zoo("basic_mixed")
    model = build_model(arch)
    for layer in arch.layers:
        qop = model.layers[layer.name.replace(".", "_")]
        assert qop.op_name == layer.op
        for conv in qop:
            assert (conv.w_bits, conv.a_bits) == (layer.w_bits, layer.a_bits)
            assert conv.weight_quant.bits == layer.w_bits and conv.act_quant.bits == layer.a_bits


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_every_registered_op_runs_forward_and_backward(name):
    c_in = c_out = c_mid = 24
    why = ops.get_op(name).check(c_in, c_out, c_mid)
    assert why is None, why
    op = QOp(name, c_in, c_out, c_mid, w_bits=4, a_bits=4).train()
    x = torch.randn(2, c_in, 9, 11, requires_grad=True)
    y = op(x)
    assert y.shape == (2, c_out, 9, 11)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in op.parameters())


def test_unknown_op_lists_the_names():
    with pytest.raises(KeyError, match="simple_3x3"):
        ops.get_op("simple_9x9")


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="twice"):
        ops.register("simple_3x3", lambda a, b, c: [])


def test_grouped_op_checks_divisibility():
    assert "3 groups" in ops.get_op("simple_3x3_grouped_3").check(35, 35, 35)


def test_rfdn_rejects_inputs_smaller_than_esa_needs():
    model = build_model(zoo.load_zoo("rfdn_mixed")).eval()
    with pytest.raises(ValueError, match="at least 5x5"):
        model(torch.rand(1, 3, 4, 32))
    assert model(torch.rand(1, 3, 5, 7)).shape == (1, 3, 20, 28)  # ESA's mirror-padded pool: 5 suffices


def test_conv_input_zero_is_exact_so_zero_padding_is_exact():
    conv = QConv2d(ops.ConvDef(4, 4, (3, 3)), 8, 8)
    conv(torch.randn(1, 4, 8, 8))
    assert conv.act_quant(torch.zeros(3)).eq(0).all()


def test_anchor_starts_the_network_near_the_upsampled_input():
    """With the anchor, the output is the nearest-upsampled input plus what the layers add;
    zeroing the upsample conv leaves the tail's residual on the input alone."""
    spec = zoo.load_zoo("basic_mixed_anchor")
    assert spec.anchor == "nearest" and zoo.load_zoo("basic_mixed").anchor == "none"
    model = build_model(spec.with_(layers=tuple(l.__class__(l.name, l.op, 32, 32) for l in spec.layers))).eval()
    x = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        for p in model.layers["upsample"].parameters():
            p.zero_()
        for p in model.layers["tail_1"].parameters():
            p.zero_()
        y = model(x)
    assert torch.equal(y, torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest"))
