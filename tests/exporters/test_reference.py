"""The numpy reference executor against the fake-quant PyTorch model and the runtimes' kernels.

Tolerance, in quantization steps of the uint8 output: fake-quant PyTorch vs the reference
in "pytorch" (exact) arithmetic on the canonical graph: 0 for every quantized zoo entry.
Both compute the integer accumulator exactly, requantise it onto the grid of the tensor
it writes in one rounding (``quant.functional.requantize``, as onnxruntime does). The float entry: 1 step at most (float32
convolutions sum in another order).
"""
import numpy as np
import pytest
import torch

from qnas_deploy.exporters import reference
from qnas_deploy.exporters.arithmetic import exact
from qnas_deploy.exporters.builder import lower_model as lower
from qnas_deploy.spaces import rfdn
from qnas_deploy.zoo import names


def _image(h=24, w=28, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode="bilinear")
    return (x * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("name", names())
def test_reference_equals_fake_quant_model(name, zoo_model):
    m = zoo_model(name)
    graph = lower(m)
    x = _image()
    with torch.no_grad():
        y = torch.round(m(torch.from_numpy(x).float() / 255).clamp(0, 1) * 255).to(torch.uint8).numpy()
    r = reference.run(graph, x)
    if name == "basic_fp32":  # float network: float32 conv sums in another order, 1 step at most
        assert np.abs(y.astype(int) - r.astype(int)).max() <= 1
    else:
        assert np.array_equal(y, r)


@pytest.mark.parametrize("name,h,w", [("rfdn_mixed", 69, 69), ("rfdn_mixed", 96, 128), ("basic_mixed", 71, 53)])
def test_reference_equals_fake_quant_model_on_larger_images(name, h, w, zoo_model):
    """Larger and odd sizes: more accumulators near a rounding tie, and ESA's pooled map
    resized by uneven ratios (a trained RFDN once differed here on 42% of the pixels)."""
    m = zoo_model(name)
    x = _image(h, w, seed=7)
    with torch.no_grad():
        y = torch.round(m(torch.from_numpy(x).float() / 255).clamp(0, 1) * 255).to(torch.uint8).numpy()
    assert np.array_equal(y, reference.run(lower(m), x))


@pytest.mark.parametrize("big", [False, True])
def test_reference_integer_conv_is_exact(big):
    """The reference accumulates integer convs in float64 (BLAS) when every partial sum is
    an integer below 2^53, and in int64 otherwise; both equal a plain int64 convolution."""
    rng = np.random.default_rng(0)
    hi = 2 ** 48 if big else 256  # 2^48 * 128 * 27 > 2^53: the int64 path
    x = rng.integers(-hi, hi, (1, 6, 7, 9), dtype=np.int64)
    w = rng.integers(-128, 128, (4, 3, 3, 3), dtype=np.int64)
    got = exact.conv_int(x, w, 1, (1, 1), 1, 2)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((1, 4, 7, 9), np.int64)
    for o in range(4):
        g = o // 2
        for i in range(7):
            for j in range(9):
                want[0, o, i, j] = (xp[0, 3 * g:3 * g + 3, i:i + 3, j:j + 3] * w[o]).sum()
    assert got.dtype == np.int64 and np.array_equal(got, want)


@pytest.mark.parametrize("size", [(5, 7), (12, 13), (23, 37), (32, 32)])
def test_esa_upsample_is_bilinear_on_the_stride_6_grid(size):
    """ESA's integer upsampling: output pixel ``6m + i`` is ``(6 - i)/6`` of small-map pixel
    ``m`` and ``i/6`` of ``m + 1`` (the last one repeated) along each axis, cropped to the
    feature map; written here from that definition, against the conv + shuffle + crop."""
    from qnas_deploy.quant import Uint8AffineTensor

    h, w = size
    hs, ws = -(-h // 6), -(-w // 6)
    small = np.random.default_rng(0).random((1, 2, hs, ws)).astype(np.float32)
    q = Uint8AffineTensor(signed=True, bits=32)  # off: the float arithmetic alone
    up = rfdn.GridUpsample(2, q, bits=32)
    got = up(torch.from_numpy(small), (h, w)).numpy()
    padded = np.pad(small, ((0, 0), (0, 0), (0, 1), (0, 1)), mode="edge")
    want = np.zeros((1, 2, h, w))
    for y in range(h):
        for x in range(w):
            (m, i), (n, j) = divmod(y, 6), divmod(x, 6)
            want[0, :, y, x] = ((6 - i) * (6 - j) * padded[0, :, m, n] + i * (6 - j) * padded[0, :, m + 1, n]
                                + (6 - i) * j * padded[0, :, m, n + 1] + i * j * padded[0, :, m + 1, n + 1]) / 36
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-6)
    assert (rfdn.esa_upsample_kernel(2).sum(axis=(1, 2, 3)) == 36).all()


@pytest.mark.parametrize("arithmetic", sorted(reference.ARITHMETIC))
@pytest.mark.parametrize("layout", ["grouped", "dense"])
def test_esa_upsample_rounds_half_steps_up_in_every_arithmetic(arithmetic, layout):
    """ESA's quantized upsampling conv: integer weights in units of 1/72 and a bias of one
    unit, so ``acc = 2 s + 1`` for the bilinear sum ``s`` (in 1/36), and every result is
    ``s / 36`` rounded half up (no float32 multiplier's hair, no tie rule, no double rounding
    can move it: each lies 1/72 of a step or more from a boundary). The small maps here
    hold every int8 level and many half-step sums (``s = 18 mod 36``)."""
    from qnas_deploy.exporters.builder import GraphBuilder
    from qnas_deploy.exporters.passes import dense
    from qnas_deploy.quant import Uint8AffineTensor

    q = Uint8AffineTensor(signed=True, bits=8)
    q.absmax.fill_(3.7)
    q.initialized.fill_(True)
    up = rfdn.GridUpsample(2, q, bits=8).eval()
    g = GraphBuilder()
    small = g.held("small", 2, q).name
    up._half_up_bias()
    g.conv(up.conv, small, g.like("phases", small, 72), "up.conv")
    graph = g.graph(small, "phases", 1)
    if layout == "dense":  # LiteRT's targets write the grouped conv as a dense one
        graph = dense.run(graph)
    node = graph.nodes[0]
    rng = np.random.default_rng(0)
    levels = rng.permutation(np.arange(q.qmin, q.qmax + 1)).reshape(1, 2, 8, 16)
    pairs = np.repeat(rng.integers(q.qmin, q.qmax + 1, (1, 2, 8, 8)), 2, axis=-1)  # equal neighbours: more ties
    values = {small: np.concatenate([levels, pairs, levels[..., ::-1]], axis=2).astype(np.int32)}
    acc = exact.accumulate(graph, node, values)
    assert np.all(acc % 2 == 1)
    s36 = (acc - 1) // 2
    assert np.mean(s36 % 36 == 18) > 0.02  # half steps are there to be rounded
    want = np.clip(np.floor_divide(s36 + 18, 36) + q.zero_point, q.qmin, q.qmax)
    got = reference.ARITHMETIC[arithmetic]["conv"](graph, node, values)
    assert np.array_equal(got, want)


def test_esa_upsample_step_is_a_constant_across_checkpoints():
    """A checkpoint from before the half-up bias holds the weight step 1/36; loading it keeps
    1/72 (the step is the conv's definition, not a learned value), and the bias is no weight."""
    from qnas_deploy.quant import Uint8AffineTensor

    up = rfdn.GridUpsample(2, Uint8AffineTensor(signed=True, bits=8), bits=8)
    state = up.state_dict()
    assert "conv.bias" not in state
    state["conv.weight_quant.step"] = torch.full_like(state["conv.weight_quant.step"], 1 / 36)
    up.load_state_dict(state)
    assert torch.all(up.conv.weight_quant.step == 1 / 72)
    assert torch.equal(up.conv.weight_quant.integer_weight(up.conv.weight) % 2, torch.zeros_like(up.conv.weight))


@pytest.mark.parametrize("h", range(5, 40))
def test_esa_small_map_covers_the_input_on_the_stride_6_grid(h):
    """conv2 (stride 2, pad 1) then the 7x7/3 pool padded by 3: ceil(h / 6) small-map
    pixels, the last at input pixel 6 * (n - 1) <= h - 1, so the x6 upsampling covers h."""
    esa = rfdn.ESA(12, 8, 8).eval()
    x = torch.zeros(1, 12, h, h)
    c1 = esa.conv2(esa.conv1(x, None), None)
    pooled = torch.nn.functional.max_pool2d(rfdn.symmetric_pad(c1, 3), 7, 3)
    assert c1.shape[-1] == -(-h // 2) and pooled.shape[-1] == -(-h // 6)
