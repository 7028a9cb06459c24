"""``export --format ort``: onnxruntime Mobile's ORT format, made by onnxruntime's converter.

Tolerance: 0 steps of the uint8 output against the ``.onnx`` file in onnxruntime (the ORT
file is that graph, optimised at conversion instead of at load: the same kernels), and so
against the reference in onnxruntime's arithmetic.
"""
import json

import numpy as np
import onnx
import pytest

from qnas_deploy.cli import main
from qnas_deploy.errors import BadInput, QnasError
from qnas_deploy.exporters import export as pipeline
from qnas_deploy.exporters import ort_format, reference
from qnas_deploy.exporters.options import ExportOptions
from qnas_deploy.runtimes import RUNTIMES, file_options, open_model, runtimes_for
from qnas_deploy.runtimes.onnxruntime import session
from qnas_deploy.zoo import load_zoo, names

QUANTIZED = [n for n in names() if not load_zoo(n).float_only]


def _image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (1, 3, h, w), dtype=np.uint8)


@pytest.mark.parametrize("name", QUANTIZED)
def test_ort_file_computes_the_onnx_file_pixel_for_pixel(tmp_path, name):
    e = pipeline.export(name, str(tmp_path / f"{name}.onnx"), log=lambda _: None)
    o = pipeline.export(name, str(tmp_path / f"{name}.ort"), fmt="ort", log=lambda _: None)
    assert [n.op for n in o.lowered.nodes] == [n.op for n in e.lowered.nodes]
    for h, w, seed in ((23, 37, 1), (30, 26, 5)):
        x = _image(h, w, seed)
        y_onnx = session(e.path, threads=1).run(None, {"input": x})[0]
        y_ort = session(o.path, threads=1).run(None, {"input": x})[0]
        assert np.array_equal(y_ort, y_onnx)
        assert np.array_equal(y_ort, reference.run(o.lowered, x, "onnxruntime"))


def test_ort_file_is_ort_format_with_its_config_and_metadata(tmp_path):
    out = tmp_path / "m.ort"
    e = pipeline.export("basic_mixed", str(out), fmt="ort", log=lambda _: None)
    data = out.read_bytes()
    assert data[4:8] == b"ORTM"  # the ORT flatbuffer's file identifier
    with pytest.raises(Exception):
        onnx.load_from_string(data)
    config = (tmp_path / f"m{ort_format.CONFIG_SUFFIX}").read_text()
    assert "# - m.ort" in config and "/tmp" not in config
    ops = {op.split("{")[0] for line in config.splitlines() if not line.startswith("#")
           for op in line.split(";")[2].split(",")}
    # The fused integer conv a reduced build must keep, and no float conv.
    assert "QLinearConv" in ops and "Conv" not in ops
    meta = file_options(out)
    assert meta["found"] == load_zoo("basic_mixed").to_dict()
    assert meta["options"]["format"] == "ort" and meta["options"]["target"] == "onnxruntime"
    assert e.options == meta["options"]


def test_ort_runs_where_onnx_files_run(tmp_path):
    out = tmp_path / "m.ort"
    pipeline.export("espcn_w8a8", str(out), fmt="ort", log=lambda _: None)
    assert [r.name for r in runtimes_for(out)] == ["onnxruntime-ort"]
    m = open_model(out)
    assert m.scale == 4 and "ORT format" in m.description
    lr = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    assert m.run(lr).shape == (36, 44, 3)
    assert RUNTIMES["onnxruntime-ort"].timed_call(out, (1, 3, 8, 8), threads=1)() is not None


@pytest.mark.parametrize("kw, needle", [
    (dict(target="openvino"), "--target openvino: ort files are made for onnxruntime only"),
    (dict(target="litert-xnnpack"), "--target litert-xnnpack writes tflite files, not ort"),
    (dict(io="int8"), "--io int8 is for --format tflite (ort takes uint8 or float images)"),
])
def test_ort_options_refused_in_one_line(kw, needle):
    with pytest.raises(BadInput) as e:
        ExportOptions(format="ort", **kw)
    assert needle in str(e.value)


def test_a_failed_conversion_leaves_no_file(tmp_path, monkeypatch, capsys):
    def broken(data, name="model"):
        raise QnasError("onnxruntime's ORT converter failed: boom")

    monkeypatch.setattr(ort_format, "to_ort", broken)
    out = tmp_path / "m.ort"
    assert main(["export", "espcn_w8a8", "--format", "ort", "-o", str(out)]) == 1
    assert "ORT converter failed: boom" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_the_config_beside_and_refuses_an_unwritable_one(tmp_path, capsys):
    out = tmp_path / "x.ort"
    assert main(["export", "espcn_w8a8", "--format", "ort", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"and {tmp_path / ('x' + ort_format.CONFIG_SUFFIX)}" in err
    # A folder where the config goes: refused before any work, nothing written.
    (tmp_path / f"y{ort_format.CONFIG_SUFFIX}").mkdir()
    assert main(["export", "espcn_w8a8", "--format", "ort", "-o", str(tmp_path / "y.ort")]) == 2
    assert "it is a folder" in capsys.readouterr().err
    assert not (tmp_path / "y.ort").exists()
    assert json.loads(json.dumps(file_options(out)["options"]))["format"] == "ort"
