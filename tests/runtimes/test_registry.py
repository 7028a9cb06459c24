"""The runtimes registry: names, file types, targets, dispatch, opening and metadata."""
import json

import numpy as np
import pytest

from qnas_deploy.cli import main
from qnas_deploy.errors import BadInput
from qnas_deploy.runtimes import RUNTIMES, file_options, open_model, read_metadata, runtimes_for


def test_every_runtime_names_its_file_type_and_target():
    # The targets are the names of the exporters' target table; parity checks each runtime
    # against the reference in its target's arithmetic.
    assert {n: (r.name, r.suffix, r.target) for n, r in RUNTIMES.items()} == {
        "onnxruntime": ("onnxruntime", ".onnx", "onnxruntime"),
        "onnxruntime-ort": ("onnxruntime-ort", ".ort", "onnxruntime"),
        "onnxruntime-nchw": ("onnxruntime-nchw", ".onnx", "onnxruntime"),
        "openvino": ("openvino", ".onnx", "openvino"),
        "litert-xnnpack": ("litert-xnnpack", ".tflite", "litert-xnnpack"),
        "litert-builtin": ("litert-builtin", ".tflite", "litert-builtin"),
        "litert-builtin-ref": ("litert-builtin-ref", ".tflite", "litert-builtin-ref"),
    }
    assert RUNTIMES["onnxruntime"].input_shape(5, 7) == (1, 3, 5, 7)
    assert RUNTIMES["litert-builtin"].input_shape(5, 7) == (1, 5, 7, 3)


def test_runtimes_for_dispatches_by_suffix():
    names = lambda path, **kw: [r.name for r in runtimes_for(path, **kw)]
    assert names("a/m.onnx") == ["onnxruntime"]
    assert names("a/m.ort", onnx_runtimes=("openvino",)) == ["onnxruntime-ort"]
    assert names("m.TFLITE") == ["litert-xnnpack", "litert-builtin"]
    assert names("m.tflite", tflite_kernels=("builtin",)) == ["litert-builtin"]
    assert names("m.onnx", tflite_kernels=()) == ["onnxruntime"]
    assert names("m.onnx", onnx_runtimes=("onnxruntime", "openvino")) == ["onnxruntime", "openvino"]
    with pytest.raises(BadInput, match=r"m\.xyz: expected an exported \.onnx, \.ort or \.tflite file") as e:
        runtimes_for("m.xyz")
    assert e.value.exit_code == 2


def test_unknown_suffix_is_one_line_and_exit_2_on_the_command_line(tmp_path, capsys):
    f = tmp_path / "m.xyz"
    f.write_bytes(b"whatever")
    assert main(["bench", "latency", str(f), "--runs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "m.xyz" in err[0] and ".tflite" in err[0]


def test_cli_onnx_runtimes_are_the_onnx_file_runtimes():
    from qnas_deploy.cli import ONNX_RUNTIMES

    assert set(ONNX_RUNTIMES) == {n for n, r in RUNTIMES.items() if r.suffix == ".onnx"}


@pytest.mark.parametrize("name", ["basic_mixed", "mobile_w8a8", "rfdn_mixed", "basic_mixed_bicubic"])
def test_nchw_layout_computes_what_nhwc_computes(tmp_path, name):
    """onnxruntime with and without its NHWC layout transform: the same kernels' arithmetic
    (0 differing pixels), so bench latency may pick the faster."""
    from qnas_deploy.exporters.export import export

    e = export(name, str(tmp_path / "m.onnx"), log=lambda m: None)
    lr = np.random.default_rng(2).integers(0, 256, (21, 17, 3), dtype=np.uint8)
    ys = [RUNTIMES[r].image_runner(e.path, threads=1)(lr) for r in ("onnxruntime", "onnxruntime-nchw")]
    assert np.array_equal(*ys)


def test_search_latency_backends_are_the_table_runtimes():
    """The command line spells the table's runtimes out (it starts without numpy); they must
    stay the ones the table times, and be runtimes."""
    from qnas_deploy.bench.latency_table import BACKENDS
    from qnas_deploy.cli import search

    choice = next(p for p in search.params if p.name == "latency_backend").type.choices
    assert tuple(choice) == BACKENDS and set(BACKENDS) <= set(RUNTIMES)


@pytest.mark.parametrize("name", list(RUNTIMES))
def test_each_runtime_opens_an_export_and_upscales(espcn_files, name):
    rt = RUNTIMES[name]
    path = espcn_files[rt.suffix]
    lr = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)  # not the allocated 16x20
    opened = rt.open(path, threads=1)
    assert opened.scale == 4 and opened.spec.space == "espcn" and f"({rt.label})" in opened.description
    y = opened.run(lr)
    assert y.shape == (40, 48, 3) and y.dtype == np.uint8 and y.std() > 0
    assert np.array_equal(rt.image_runner(path, threads=1)(lr), y)
    rt.timed_call(path, rt.input_shape(10, 12), threads=1)()  # a raw call at another size than allocated


def test_open_model_picks_the_runtime_by_suffix_and_kernels(espcn_files):
    lr = np.zeros((8, 8, 3), np.uint8)
    for path, xnnpack, label in [(espcn_files[".onnx"], True, "onnxruntime"),
                                 (espcn_files[".tflite"], True, "LiteRT + XNNPACK"),
                                 (espcn_files[".tflite"], False, "LiteRT builtin")]:
        opened = open_model(path, threads=1, xnnpack=xnnpack)
        assert opened.description.endswith(f"({label})") and opened.run(lr).shape == (32, 32, 3)


def test_open_model_runs_a_checkpoint_in_pytorch(tmp_path):
    from qnas_deploy.checkpoint import save_checkpoint
    from qnas_deploy.spaces import build_model
    from qnas_deploy.zoo import load_zoo

    spec = load_zoo("espcn_w8a8")
    save_checkpoint(tmp_path / "m.pt", spec, build_model(spec))
    opened = open_model(str(tmp_path / "m.pt"))
    assert "PyTorch" in opened.description and opened.spec == spec
    assert opened.run(np.zeros((6, 7, 3), np.uint8)).shape == (24, 28, 3)


@pytest.mark.parametrize("suffix", [".onnx", ".ort", ".tflite"])
def test_read_metadata_and_file_options_of_an_export(espcn_files, suffix):
    meta = read_metadata(espcn_files[suffix])
    assert meta["qnas.scale"] == "4" and json.loads(meta["qnas.found_json"])["space"] == "espcn"
    opts = file_options(espcn_files[suffix])
    assert opts["found"] == json.loads(meta["qnas.found_json"]) and opts["options"]["format"] == suffix[1:]


@pytest.mark.parametrize("name, content, needle", [
    ("bad.tflite", b"not a flatbuffer at all", "not a TFLite flatbuffer"),
    ("bad.onnx", b"not a protobuf at all", "onnxruntime cannot load it"),
    ("missing.onnx", None, "no such model file"),
    ("bad.bin", b"", "expected an exported .onnx, .ort or .tflite file"),
])
def test_read_metadata_of_a_bad_file_is_one_line(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput) as e:
        read_metadata(path)
    msg = str(e.value)
    assert needle in msg and name in msg and "\n" not in msg


def test_file_options_refuses_a_file_of_another_producer(tmp_path):
    """An .onnx file that onnxruntime loads but no qnas-deploy export wrote."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "o.onnx")
    assert read_metadata(tmp_path / "o.onnx") == {}
    with pytest.raises(BadInput, match="not a qnas-deploy export"):
        file_options(tmp_path / "o.onnx")
    with pytest.raises(BadInput, match="not a qnas-deploy export"):
        open_model(tmp_path / "o.onnx")
