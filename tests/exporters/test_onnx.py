"""The ONNX serializer and onnxruntime, on every zoo entry.

Tolerance, in quantization steps of the uint8 output: onnxruntime vs the numpy reference
in "onnxruntime" arithmetic (the exact one: the file holds no kernel that rounds per
CPU), run on the ONNX-lowered graph the file holds: 0, bit for bit, for every
quantized zoo entry.
"""
import json

import numpy as np
import onnx
import pytest
import torch

from qnas_deploy.cli import main
from qnas_deploy.exporters import ir, reference
from qnas_deploy.exporters.builder import lower_model as lower
from qnas_deploy.exporters.export import ExportOptions, compile_graph, export
from qnas_deploy.runtimes.onnxruntime import session
from qnas_deploy.spec import from_dict
from qnas_deploy.zoo import load_zoo, names

QUANTIZED = [n for n in names() if n != "basic_fp32"]


def _image(h=24, w=28, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode="bilinear")
    return (x * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return {n: export(n, folder / f"{n}.onnx", log=lambda m: None) for n in names()}


@pytest.mark.parametrize("name", QUANTIZED)
def test_onnxruntime_matches_reference(exported, name):
    e = exported[name]
    x = _image(30, 26, seed=5)
    y = session(e.path, threads=1).run(None, {"input": x})[0]
    r = reference.run(e.lowered, x, "onnxruntime")
    assert np.array_equal(y, r)


@pytest.mark.parametrize("name", QUANTIZED)
def test_openvino_matches_reference(tmp_path, name):
    """The openvino target's file in OpenVINO's CPU plugin against the reference in that
    target's arithmetic (0 steps). onnxruntime runs the same file exactly too while its
    weights stay inside +-64 (they do here: initialised; past that its x86 u8s8 kernel can
    saturate, which the openvino file does not guard against)."""
    from qnas_deploy.exporters import targets
    from qnas_deploy.runtimes import RUNTIMES

    e = export(name, tmp_path / f"{name}.onnx", target="openvino", log=lambda m: None)
    x = _image(30, 26, seed=5)
    hwc = x[0].transpose(1, 2, 0)
    y = RUNTIMES["openvino"].image_runner(e.path, threads=1)(hwc).transpose(2, 0, 1)[None]
    assert np.array_equal(y, reference.run(e.lowered, x, targets.get("openvino").arithmetic))
    y = RUNTIMES["onnxruntime"].image_runner(e.path, threads=1)(hwc).transpose(2, 0, 1)[None]
    assert np.array_equal(y, reference.run(e.lowered, x, "onnxruntime"))


@pytest.mark.parametrize("name", QUANTIZED)
def test_no_float_conv_after_onnxruntime_optimisation(exported, name, tmp_path):
    opt = tmp_path / "opt.onnx"
    session(exported[name].path, threads=1, optimized_path=str(opt))
    ops = [n.op_type for n in onnx.load(str(opt)).graph.node]
    assert ops.count("Conv") + ops.count("FusedConv") == 0
    assert ops.count("QLinearConv") >= len(exported[name].graph.conv_nodes())
    # No float islands but the adds and the muls with a factor: a quantized add is DQ, DQ ->
    # Sum -> Q on purpose (onnxruntime's QLinearAdd rounds per CPU), a mul with a factor DQ,
    # DQ -> Mul -> Mul -> Q (QLinearMul with the factor folded rounds otherwise near half
    # steps); the layout transformer's transposes next to them may run on the dequantized
    # tensor (DQ -> Transpose -> Q: no arithmetic).
    assert "Resize" not in ops and "QLinearAdd" not in ops
    graph = onnx.load(str(opt)).graph
    consumers = {n.output[0]: [c.op_type for c in graph.node if n.output[0] in c.input]
                 for n in graph.node if n.op_type == "DequantizeLinear"}
    assert all(set(c) <= {"Sum", "Transpose", "Mul"} for c in consumers.values()), consumers
    factored = sum(1 for n in exported[name].graph.nodes if n.op == "mul" and n.attrs.mult != 1.0)
    assert sum("Mul" in c for c in consumers.values()) == 2 * factored  # both inputs of each, nothing else


def test_fp32_export_runs_in_float(exported):
    ops = [n.op_type for n in onnx.load(exported["basic_fp32"].path).graph.node]
    assert "QuantizeLinear" not in ops and ops.count("Conv") == 20


def test_metadata_round_trips(exported):
    e = exported["basic_mixed"]
    model = onnx.load(e.path)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert model.producer_name == "qnas-deploy"
    assert from_dict(json.loads(meta["qnas.found_json"])) == load_zoo("basic_mixed")
    assert json.loads(meta["qnas.layer_bits"])["head.1"] == [4, 4]
    assert json.loads(meta["qnas.export_options"])["adq"] == "static"
    assert int(meta["qnas.scale"]) == 4 and "bitops_32x32" in json.loads(meta["qnas.cost"])


def test_dynamic_height_width_and_float_io(tmp_path):
    e = export("espcn_w8a8", tmp_path / "f.onnx", io="float", log=lambda m: None)
    s = session(e.path, threads=1)
    for h, w in ((16, 20), (9, 31)):
        x = _image(h, w)
        y = s.run(None, {"input": x.astype(np.float32) / 255})[0]
        assert y.shape == (1, 3, 4 * h, 4 * w) and y.dtype == np.float32
        assert np.array_equal(np.rint(y * 255).astype(np.uint8), reference.run(e.lowered, x, "onnxruntime"))


def test_packed_int4_is_refused(tmp_path):
    """onnxruntime runs INT4-weight convs as float convs (not the integer arithmetic)."""
    with pytest.raises(ir.UnsupportedOp, match="no integer kernel for INT4 weights.*--int4 container"):
        export("basic_w4a4", tmp_path / "p.onnx", int4="packed", log=lambda m: None)
    assert not (tmp_path / "p.onnx").exists()
    export("basic_w8a8", tmp_path / "q.onnx", int4="packed", log=lambda m: None)  # nothing 4-bit: nothing refused


@pytest.mark.parametrize("name", ["basic_mixed", pytest.param("rfdn_mixed", marks=pytest.mark.slow)])
def test_dynamic_adq_export(tmp_path, name):
    """Dynamic ADQ keeps phi(std(x)) per image as a float subgraph (onnxruntime's ReduceMean
    and Sqrt against numpy's float64 std: a scale can differ in its last float32 bit, which
    moves a value only where it lies within that bit of a rounding tie)."""
    e = export(name, tmp_path / "d.onnx", adq="dynamic", log=lambda m: None)
    assert sum(n.op == "adq_scale" for n in e.graph.nodes) == len(e.model.blocks)
    assert not any(n.op == "adq_scale" for n in export(name, tmp_path / "s.onnx", log=lambda m: None).graph.nodes)
    x = _image(30, 26)
    y = session(e.path, threads=1).run(None, {"input": x})[0]
    r = reference.run(e.lowered, x, "onnxruntime")
    assert y.shape == r.shape and np.abs(y.astype(int) - r).max() <= 1 and np.mean(y == r) >= 0.999
    # and it is the dynamic graph: another image statistic gives another output than static
    assert not np.array_equal(reference.run(e.graph, x), reference.run(lower(e.model, "static"), x))


def test_bad_input_exits_2_and_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["export", str(tmp_path / "missing.json"), "-o", str(out)]) == 2
    ck = tmp_path / "broken.pt"
    ck.write_bytes(b"junk")
    assert main(["export", "basic_mixed", "--weights", str(ck), "-o", str(out)]) == 2
    assert main(["export", "basic_mixed", "-o", str(tmp_path / "no" / "x.onnx")]) == 2
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    assert capsys.readouterr().err.count("error:") == 3


def test_export_cli_writes_a_model_that_upscales(tmp_path):
    from PIL import Image

    out = tmp_path / "m.onnx"
    assert main(["export", "espcn_w8a8", "--format", "onnx", "-o", str(out)]) == 0
    img = tmp_path / "lr.png"
    Image.fromarray(_image(20, 22)[0].transpose(1, 2, 0)).save(img)
    assert main(["upscale", str(out), str(img), "-o", str(tmp_path / "up.png"), "--allow-initialised"]) == 0
    assert Image.open(tmp_path / "up.png").size == (88, 80)


def test_negative_weight_steps_export_positive_scales(tmp_path, zoo_model):
    """LSQ steps can cross zero in training; the grid is ``|step|``, in the model and in the
    export, so every exported scale is positive (XNNPACK refuses negative ones and the ONNX
    spec asks for positive ones) and the export stays exact."""
    from qnas_deploy.runtimes.litert import TfliteModelRunner, interpreter
    from qnas_deploy.quant import LSQWeightPerChannel

    m = zoo_model("basic_mixed")
    with torch.no_grad():
        for q in (q for q in m.modules() if isinstance(q, LSQWeightPerChannel) and q.enabled):
            q.step[::3] *= -1
    g = lower(m)
    assert all((n.attrs.w_scale > 0).all() for n in g.nodes if n.op == "conv")
    x = _image(20, 22)
    with torch.no_grad():
        y = torch.round(m(torch.from_numpy(x).float() / 255).clamp(0, 1) * 255).to(torch.uint8).numpy()
    assert np.array_equal(reference.run(g, x, "pytorch"), y)
    lowered, data = compile_graph(g, ExportOptions(format="tflite", input_size=(20, 22)))
    it = interpreter(data, threads=1)
    assert sum(o["op_name"] == "DELEGATE" for o in it._get_ops_details()) == 1
    hwc = np.ascontiguousarray(x[0].transpose(1, 2, 0))
    assert np.array_equal(TfliteModelRunner(it, "uint8")(hwc), reference.runner(lowered, "litert-xnnpack")(hwc))


@pytest.mark.parametrize("groups", [1, 3])
def test_wide_int8_weights_avoid_saturating_u8s8_kernel(tmp_path, groups):
    """MLAS's AVX2 uint8 x int8 kernel sums pairs of products in saturating int16; a conv
    with weights near +-127 on bright pixels would clip there. Such weights are written as
    uint8 with zero point 128, and onnxruntime then equals the reference exactly."""
    from qnas_deploy.exporters.ir import Graph, Node, Tensor
    from qnas_deploy.exporters.passes.u8s8_weights import may_saturate

    c = 12
    s = float(np.float32(1 / 255))
    t = {"image": Tensor("image", 3, s, 0, 0, 255), "mid": Tensor("mid", c, 0.02, 128, 0, 255),
         "sr": Tensor("sr", 3, s, 0, 0, 255)}
    rng = np.random.default_rng(0)
    w1 = (rng.choice([-1, 1], (c, 3 // groups, 3, 3)) * rng.integers(100, 128, (c, 3 // groups, 3, 3))).astype(np.int8)
    w2 = rng.integers(-127, 128, (3, c, 1, 1)).astype(np.int8)
    conv = dict(stride=1, dilation=1, w_bits=8)
    g = Graph(t, [Node("conv", ["image"], "mid", ir.Conv(**conv, groups=groups, pad=(1, 1), kernel=(3, 3), weight=w1,
                                                          w_scale=np.full(c, 2e-3, np.float32),
                                                          bias=np.zeros(c, np.int32))),
                  Node("conv", ["mid"], "sr", ir.Conv(**conv, groups=1, pad=(0, 0), kernel=(1, 1), weight=w2,
                                                      w_scale=np.full(3, 1e-4, np.float32),
                                                      bias=np.zeros(3, np.int32)))],
              "image", "sr", 1)
    assert may_saturate(w1, groups) and not may_saturate((w1 // 2).astype(np.int8), groups)
    x = np.where(rng.random((1, 3, 16, 16)) < 0.5, 255, 0).astype(np.uint8)
    lowered, data = compile_graph(g, ExportOptions())
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    assert lowered.nodes[0].attrs.storage == "uint8"
    y = session(path, threads=1).run(None, {"input": x})[0]
    assert np.array_equal(y, reference.run(lowered, x, "onnxruntime"))


# A grouped 3x3 conv (3 groups, 1 input channel each) from a trained demo checkpoint: a pair
# of its weights (40, 92) times bright pixels passes int16 in onnxruntime's u8s8 kernel.
_GROUPED_W = [[-16, -19, 0, -11, 13, 14, -6, -40, 11], [-18, 8, 7, 2, 18, 17, 3, -28, -32],
              [10, 16, 11, -37, -9, 41, 16, -15, -5], [5, 42, 46, 28, -26, -21, 1, -14, 7],
              [7, 0, 11, 8, -4, 14, -7, -1, 9], [11, -7, -7, -3, 4, 5, 1, -1, -2],
              [14, -14, -16, 20, 40, 92, -43, -38, 45], [-29, -28, 31, 36, 46, -65, 93, -26, 7],
              [-12, -4, -4, -5, -9, 8, -2, 5, -1], [10, -12, 0, 11, -7, 13, 3, -7, 31],
              [-128, 0, -128, -128, -128, -128, -33, -128, 0], [0, 16, -1, -6, -19, -11, -9, 34, -8]]


def test_trained_grouped_conv_is_exact_in_onnxruntime(tmp_path):
    from qnas_deploy.exporters.ir import Graph, Node, Tensor

    s = float(np.float32(1 / 255))
    w = np.array(_GROUPED_W, np.int8).reshape(12, 1, 3, 3)
    ws = np.array([0.0254, 0.0257, 0.0205, 0.0154, 0.0231, 0.0993, 0.0166, 0.0118, 0.0637, 0.0313, 1.2e-07,
                   0.0272], np.float32)
    t = {"image": Tensor("image", 3, s, 0, 0, 255), "mid": Tensor("mid", 12, 0.0058, 0, 0, 255)}
    g = Graph(t, [Node("conv", ["image"], "mid", ir.Conv(stride=1, dilation=1, groups=3, w_bits=8, pad=(1, 1),
                                                         kernel=(3, 3), weight=w, w_scale=ws,
                                                         bias=np.array([1149, 465, -147, -83, 728, -76, -1220, -1689,
                                                                        14, -642, 0, 6], np.int32)))],
              "image", "mid", 1)
    x = np.where(np.random.default_rng(0).random((1, 3, 32, 32)) < 0.5, 255, 0).astype(np.uint8)
    lowered, data = compile_graph(g, ExportOptions())
    path = tmp_path / "g.onnx"
    path.write_bytes(data)
    assert np.array_equal(session(path, threads=1).run(None, {"input": x})[0],
                          reference.run(lowered, x, "onnxruntime"))
