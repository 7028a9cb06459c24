"""The numpy reference executor against the fake-quant PyTorch model and the runtimes' kernels.

Tolerance, in quantization steps of the uint8 output: fake-quant PyTorch vs the reference
in "pytorch" (exact) arithmetic on the canonical graph: 0 for every quantized zoo entry.
Both compute the integer accumulator exactly, requantise it onto the grid of the tensor
it writes in one rounding (``quant.functional.requantize``, as onnxruntime does) and
resize ESA's map with onnxruntime's float Resize. The float entry: 1 step at most (float32
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


@pytest.mark.parametrize("shape", [(5, 4, 30, 26), (7, 9, 45, 53), (21, 21, 128, 128)])
def test_reference_resize_is_onnxruntime_float_resize(shape):
    """The reference's bilinear and the model's ESA resize are bit for bit onnxruntime's
    float Resize (F.interpolate's order of operations differs in the last bits)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    h, w, oh, ow = shape
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear",
                            coordinate_transformation_mode="half_pixel")
    graph = helper.make_graph([node], "resize", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "c", "h", "w"]),
        helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(0).integers(0, 256, (1, 16, h, w)).astype(np.float32)
         * np.float32(0.0213)).astype(np.float32)
    y = s.run(None, {"x": x, "sizes": np.array([1, 16, oh, ow], np.int64)})[0]
    assert np.array_equal(y, exact.bilinear(x, (oh, ow)))
    assert np.array_equal(y, rfdn.bilinear(torch.from_numpy(x), (oh, ow)).numpy())

