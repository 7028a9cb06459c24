"""Lowering, the numpy reference, the ONNX writer and onnxruntime, on every zoo entry.

Tolerances, in quantization steps of the uint8 output:
* fake-quant PyTorch vs numpy reference ("torch" arithmetic): 0 everywhere. Both compute
  the integer accumulator exactly and requantise with the same float32 operations.
* onnxruntime vs numpy reference ("ort" arithmetic, which reproduces QLinearAdd's fixed
  point and the identity-conv requantisation): >= 99.9% identical pixels. What remains
  are float32 ties of a different operation order; with initialised (untrained) weights
  one flipped internal step can move an output pixel far, so the share, not the size, of
  differing pixels is bounded.
"""
import json

import numpy as np
import onnx
import pytest
import torch

from qnas_deploy.calibrate import calibrate
from qnas_deploy.cli import main
from qnas_deploy.exporters import reference
from qnas_deploy.exporters.export import export
from qnas_deploy.exporters.lower import lower
from qnas_deploy.exporters.onnx_runner import session
from qnas_deploy.spaces import build_model
from qnas_deploy.spec import from_dict
from qnas_deploy.zoo import load_zoo, names

QUANTIZED = [n for n in names() if n != "basic_fp32"]
ORT_EXACT = [n for n in QUANTIZED if not n.startswith("rfdn")]  # rfdn: see the export notes


def _image(h=24, w=28, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(h, w), mode="bilinear")
    return (x * 255).round().to(torch.uint8).numpy()


def _model(name):
    torch.manual_seed(0)
    m = build_model(load_zoo(name))
    g = torch.Generator().manual_seed(1)
    calibrate(m, [torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(24, 24),
                                                   mode="bilinear") for _ in range(3)])
    return m.eval()


@pytest.mark.parametrize("name", names())
def test_reference_equals_fake_quant_model(name):
    m = _model(name)
    graph = lower(m)
    x = _image()
    with torch.no_grad():
        y = torch.round(m(torch.from_numpy(x).float() / 255).clamp(0, 1) * 255).to(torch.uint8).numpy()
    r = reference.run(graph, x)
    if name == "basic_fp32":  # float network: float32 conv sums in another order, 1 step at most
        assert np.abs(y.astype(int) - r.astype(int)).max() <= 1
    else:
        assert np.array_equal(y, r)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return {n: export(n, folder / f"{n}.onnx", log=lambda m: None) for n in names()}


@pytest.mark.parametrize("name", ORT_EXACT)
def test_onnxruntime_matches_reference(exported, name):
    e = exported[name]
    x = _image(30, 26, seed=5)
    y = session(e.path, threads=1).run(None, {"input": x})[0]
    r = reference.run(e.graph, x, "ort")
    assert np.mean(y == r) >= 0.999


@pytest.mark.parametrize("name", ORT_EXACT)
def test_no_float_conv_after_onnxruntime_optimisation(exported, name, tmp_path):
    opt = tmp_path / "opt.onnx"
    session(exported[name].path, threads=1, optimized_path=str(opt))
    ops = [n.op_type for n in onnx.load(str(opt)).graph.node]
    assert ops.count("Conv") + ops.count("FusedConv") == 0
    assert ops.count("QLinearConv") >= len(exported[name].graph.conv_nodes())


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
        assert np.array_equal(np.rint(y * 255).astype(np.uint8), reference.run(e.graph, x, "ort"))


def test_packed_int4_export_runs(tmp_path):
    e = export("basic_w4a4", tmp_path / "p.onnx", int4="packed", log=lambda m: None)
    model = onnx.load(e.path)
    assert model.opset_import[0].version == 21
    assert any(t.data_type == onnx.TensorProto.INT4 for t in model.graph.initializer)
    x = _image()
    y = session(e.path, threads=1).run(None, {"input": x})[0]
    assert np.mean(y == reference.run(e.graph, x, "ort")) >= 0.999


def test_dynamic_adq_export(tmp_path):
    e = export("basic_mixed", tmp_path / "d.onnx", adq="dynamic", log=lambda m: None)
    assert sum(n.op == "adq_scale" for n in e.graph.nodes) == 3
    x = _image()
    y = session(e.path, threads=1).run(None, {"input": x})[0]
    assert y.shape == (1, 3, 96, 112)


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
    assert main(["upscale", str(out), str(img), "-o", str(tmp_path / "up.png")]) == 0
    assert Image.open(tmp_path / "up.png").size == (88, 80)
