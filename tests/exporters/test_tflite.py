"""The TFLite serializer and LiteRT, on every zoo entry, with both kernel sets.

Tolerances, in quantization steps of the uint8 output:
* LiteRT + XNNPACK vs the numpy reference in "litert-xnnpack" arithmetic, and LiteRT's
  builtin kernels vs the reference in "litert-builtin" arithmetic (gemmlowp fixed point),
  each run on the LiteRT-lowered graph the file holds: 0, for every quantized zoo entry.
  Both reproduce the kernels' own integer arithmetic, so any difference is a bug in a
  pass, the serializer or the reference.
* the float zoo entry: at most 1 step and >= 99.9% identical pixels vs the reference
  ("pytorch"), as float32 convolutions sum in another order than numpy.
"""
import json

import numpy as np
import pytest
import torch

from qnas_deploy.cli import main
from qnas_deploy.exporters import ir, reference
from qnas_deploy.exporters.arithmetic.litert import multiply_by_quantized_multiplier, quantize_multiplier
from qnas_deploy.exporters.builder import lower_model as lower
from qnas_deploy.exporters.export import ExportOptions, compile_graph
from qnas_deploy.exporters.ir import Graph, Node, Tensor, UnsupportedOp
from qnas_deploy.exporters.passes.crd_to_dcr import d2s_permutation
from qnas_deploy.runtimes.litert import TfliteModelRunner, interpreter, open_tflite, read_tflite_metadata
from qnas_deploy.zoo import names

IMG = (20, 26)


def to_tflite(g: Graph, input_size=IMG, **options) -> tuple[Graph, bytes]:
    """(the LiteRT-lowered graph, the file) of a canonical graph."""
    return compile_graph(g, ExportOptions(format="tflite", input_size=input_size, **options))


def _hwc(h=IMG[0], w=IMG[1], seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode="bilinear")
    return (x * 255).round().to(torch.uint8).numpy()[0].transpose(1, 2, 0).copy()


@pytest.fixture(scope="module")
def graphs(zoo_model):
    return {n: lower(zoo_model(n)) for n in names()}


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("kernels", ["xnnpack", "builtin", "builtin-ref"])
def test_zoo_matches_reference(graphs, name, kernels):
    lowered, data = to_tflite(graphs[name])
    run = TfliteModelRunner(interpreter(data, threads=1, kernels=kernels), "uint8")
    x = _hwc()
    y = run(x)
    assert y.shape == (IMG[0] * lowered.scale, IMG[1] * lowered.scale, 3)
    if name == "basic_fp32":
        r = reference.runner(graphs[name], "pytorch")(x)
        d = np.abs(y.astype(int) - r)
        assert d.max() <= 1 and (d == 0).mean() >= 0.999
    else:
        assert np.array_equal(y, reference.runner(lowered, f"litert-{kernels}")(x))


def test_input_is_resized(graphs):
    g, data = to_tflite(graphs["rfdn_mixed"], input_size=(24, 24))  # ESA's crop follows the input size too
    run = TfliteModelRunner(interpreter(data, threads=1), "uint8")
    for h, w in [(20, 31), (17, 16), (24, 24)]:
        x = _hwc(h, w)
        assert np.array_equal(run(x), reference.runner(g, "litert-xnnpack")(x))


def test_depth_to_space_equals_pixel_shuffle():
    """A hand-built graph: a 1x1 conv puts a distinct value in every channel, then
    depth-to-space; TFLite's DCR order must give PyTorch's pixel_shuffle result."""
    r, c = 2, 3
    s = float(np.float32(1 / 255))
    t = {"image": Tensor("image", 3, s, 0, 0, 255), "u": Tensor("u", c * r * r, s, 0, 0, 255),
         "sr": Tensor("sr", 3, s, 0, 0, 255)}
    k = c * r * r
    weight = np.zeros((k, 3, 1, 1), np.int8)
    weight[np.arange(k), np.arange(k) % 3] = 1
    conv = ir.Conv(stride=1, pad=(0, 0), dilation=1, groups=1, kernel=(1, 1), weight=weight,
                   w_scale=np.ones(k, np.float32), w_bits=8, bias=(np.arange(k) * 17).astype(np.int32))
    g = Graph(t, [Node("conv", ["image"], "u", conv), Node("depth_to_space", ["u"], "sr", ir.DepthToSpace(blocksize=r))],
              "image", "sr", r)
    x = np.random.default_rng(0).integers(0, 40, (5, 7, 3), dtype=np.uint8)
    u = np.clip(x.transpose(2, 0, 1)[np.arange(k) % 3].astype(int) + (np.arange(k) * 17)[:, None, None], 0, 255)
    expect = torch.nn.functional.pixel_shuffle(torch.from_numpy(u)[None].float(), r)[0].numpy().astype(np.uint8)
    for xnnpack in (True, False):
        y = TfliteModelRunner(interpreter(to_tflite(g, input_size=(5, 7))[1], 1, xnnpack), "uint8")(x)
        assert np.array_equal(y.transpose(2, 0, 1), expect)
    assert list(d2s_permutation(2, 2)) == [0, 4, 1, 5, 2, 6, 3, 7]  # FACTS.md's r=2, C=2 example


@pytest.mark.parametrize("io", ["int8", "float"])
def test_io_types(graphs, io):
    g, data = to_tflite(graphs["basic_mixed"], io=io)
    run = TfliteModelRunner(interpreter(data, threads=1), io)
    x = _hwc()
    assert np.array_equal(run(x), reference.runner(g, "litert-xnnpack")(x))


def test_packed_int4_runs_exact_in_builtin(graphs):
    (g, packed), (_, container) = (to_tflite(graphs["basic_w4a4"], int4="packed", target="litert-builtin"),
                                   to_tflite(graphs["basic_w4a4"]))
    assert len(packed) < 0.75 * len(container)
    x = _hwc()
    run = TfliteModelRunner(interpreter(packed, threads=1, xnnpack=False), "uint8")
    assert np.array_equal(run(x), reference.runner(g, "litert-builtin")(x))


def test_packed_int4_is_refused_for_xnnpack(graphs):
    """XNNPACK takes no INT4 conv filter: the convs would leave it for the builtin kernels."""
    with pytest.raises(UnsupportedOp, match="XNNPACK delegate takes no INT4 conv filter.*--int4 container"):
        to_tflite(graphs["basic_w4a4"], int4="packed")
    to_tflite(graphs["basic_w8a8"], int4="packed")  # nothing 4-bit: nothing to refuse


def test_gemmlowp_primitives():
    # 0.75 = 0.75 * 2^0 -> Q31 significand 0.75 * 2^31, exponent 0
    assert quantize_multiplier(0.75) == (3 << 29, 0)
    sig, sh = quantize_multiplier(0.5)
    x = np.array([-3, -1, 1, 3, 5])
    # SaturatingRoundingDoublingHighMul nudges by -(2^30 - 1) below zero and truncates:
    # halves round upward: -1.5 -> -1, -0.5 -> 0, 0.5 -> 1, 1.5 -> 2, 2.5 -> 3
    assert list(multiply_by_quantized_multiplier(x, sig, sh)) == [-1, 0, 1, 2, 3]
    # a right shift (RoundingDivideByPOT) rounds halves away from zero: -3/4 -> -1, 3/4 -> 1, -6/4 -> -2
    sig, sh = quantize_multiplier(0.25)
    assert list(multiply_by_quantized_multiplier(np.array([-3, 3, -6]), sig, sh)) == [-1, 1, -2]


def test_cli_export_tflite_and_runners(tmp_path):
    out = tmp_path / "m.tflite"
    assert main(["export", "espcn_w8a8", "--format", "tflite", "-o", str(out), "--input-size", "16x20"]) == 0
    meta = read_tflite_metadata(out.read_bytes())
    assert json.loads(meta["qnas.found_json"])["space"] == "espcn"
    assert json.loads(meta["qnas.export_options"])["input_size"] == "16x20"
    opened = open_tflite(out, threads=1)
    assert opened.scale == 4 and opened.run(_hwc(16, 20)).shape == (64, 80, 3)
    img = tmp_path / "lr.png"
    from PIL import Image

    Image.fromarray(_hwc(18, 22)).save(img)
    for flags in ([], ["--no-xnnpack", "--threads", "1"]):
        assert main(["upscale", str(out), str(img), "-o", str(tmp_path / "sr.png"), "--allow-initialised", *flags]) == 0
        assert Image.open(tmp_path / "sr.png").size == (88, 72)


@pytest.mark.parametrize("args, needle", [
    (["--adq", "dynamic"], "--adq dynamic"),
    (["--input-size", "12by4"], "--input-size"),
    (["--weights", "missing.pt"], "missing.pt"),
])
def test_cli_export_tflite_bad_input(tmp_path, capsys, args, needle):
    out = tmp_path / "m.tflite"
    assert main(["export", "basic_mixed", "--format", "tflite", "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert list(tmp_path.iterdir()) == []


def test_corrupt_tflite_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    img = tmp_path / "lr.png"
    from PIL import Image

    Image.fromarray(_hwc()).save(img)
    assert main(["upscale", str(bad), str(img), "-o", str(tmp_path / "o.png")]) == 2
    assert "bad.tflite" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_widened_filters_keep_products_and_cut_double_rounding():
    from qnas_deploy.exporters.passes import requant_as_conv, widen

    w = np.array([[-8, 7], [0, 0], [1, -1], [-127, 64]], np.int8).reshape(4, 2, 1, 1)
    s = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    b = np.array([5, 0, -3, 2**30], np.int32)
    w2, s2, b2 = widen.widen(w, s, b)
    assert np.abs(w2.astype(int)).max() <= 127 and list(w2[:, 0, 0, 0]) == [-64, 0, 64, -127]
    assert np.array_equal(w2.astype(np.float64) * s2.reshape(-1, 1, 1, 1), w.astype(np.float64) * s.reshape(-1, 1, 1, 1))
    assert np.array_equal(b2.astype(np.float64) * s2, b.astype(np.float64) * s)  # bias grid s_in * s
    # A requantisation by ~0.34 (multiplier exponent -1): with weight 1 the builtin kernel's
    # two roundings put about a quarter of the values one step off; widened, almost none.
    sc = float(np.float32(1 / 255))
    t = {"image": Tensor("image", 3, sc, 0, 0, 255), "mid": Tensor("mid", 3, sc / 0.3407, 0, 0, 255)}
    g = requant_as_conv.run(Graph(t, [Node("requant", ["image"], "mid", ir.Requant())], "image", "mid", 1))
    x = np.tile(np.arange(256, dtype=np.uint8), 3).reshape(1, 3, 16, 16)
    exact = reference.run_tensors(g, x, "pytorch")["mid"]
    narrow = np.mean(exact == reference.run_tensors(g, x, "litert-builtin")["mid"])
    wide = np.mean(exact == reference.run_tensors(widen.run(g), x, "litert-builtin")["mid"])
    assert narrow < 0.9 and wide >= 0.97


def test_grouped_conv_matches_builtin_reference_kernel():
    """Grouped (not depthwise) convs run TFLite's reference kernel, which rounds like gemmlowp."""
    from qnas_deploy.calibrate import calibrate
    from qnas_deploy.spaces import build_model
    from qnas_deploy.spec import uniform

    torch.manual_seed(0)
    spec = uniform("basic", {"head": "simple_3x3_grouped_3", "body": "simple_3x3_grouped_3",
                             "skip": "simple_1x1", "upsample": "simple_3x3", "tail": "simple_3x3_grouped_3"},
                   8, channels=6, blocks=1)
    m = build_model(spec)
    calibrate(m, [torch.rand(2, 3, 16, 16) for _ in range(2)])
    g, data = to_tflite(lower(m.eval()))
    run = TfliteModelRunner(interpreter(data, threads=1, xnnpack=False), "uint8")
    x = _hwc()
    assert np.array_equal(run(x), reference.runner(g, "litert-builtin")(x))


@pytest.mark.parametrize("bits", [8, 32])
def test_grouped_conv_into_depth_to_space(bits):
    """A grouped upsample conv feeds PixelShuffle: TFLite's DCR order permutes its output
    channels across groups, so the writer must run it dense (and still exactly)."""
    from qnas_deploy.calibrate import calibrate
    from qnas_deploy.spaces import build_model
    from qnas_deploy.zoo import load_zoo

    spec = load_zoo("basic_mixed")
    layers = tuple(l.__class__(l.name, "simple_3x3_grouped_3" if l.name == "upsample" else l.op,
                               bits if bits == 32 else l.w_bits, bits if bits == 32 else l.a_bits)
                   for l in spec.layers)
    torch.manual_seed(0)
    m = build_model(spec.with_(layers=layers, name="grouped_upsample"))
    calibrate(m, [torch.rand(2, 3, 24, 24) for _ in range(2)])
    g = lower(m.eval())
    lowered, data = to_tflite(g)
    run = TfliteModelRunner(interpreter(data, threads=1), "uint8")
    x = _hwc()
    y = run(x)
    if bits == 32:
        d = np.abs(y.astype(int) - reference.runner(g, "pytorch")(x))
        assert d.max() <= 1 and (d == 0).mean() >= 0.999
    else:
        assert np.array_equal(y, reference.runner(lowered, "litert-xnnpack")(x))
