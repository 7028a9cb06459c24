"""The export pipeline: options checked once, prepare -> lower -> write, metadata, determinism."""
import hashlib
import json

import pytest

from qnas_deploy.errors import BadInput
from qnas_deploy.exporters import export as pipeline
from qnas_deploy.exporters.options import ExportOptions
from qnas_deploy.runtimes import read_metadata
from qnas_deploy.zoo import load_zoo


@pytest.mark.parametrize("kw, needle", [
    (dict(format="pb"), "--format pb"),
    (dict(format="tflite", adq="dynamic"), "--adq dynamic cannot be exported to TFLite"),
    (dict(int4="half"), "--int4 must be container or packed"),
    (dict(io="int8"), "--io int8 is for --format tflite"),
    (dict(format="tflite", io="int16"), "--io must be one of uint8, int8, float for tflite"),
    (dict(format="tflite", input_size=(0, 4)), "--input-size must be positive"),
])
def test_options_are_checked_once_with_one_line(kw, needle):
    with pytest.raises(BadInput) as e:
        ExportOptions(**kw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_options_default_to_the_format_target_and_are_frozen():
    assert ExportOptions().target == "onnxruntime"
    assert ExportOptions(format="tflite").target == "litert-xnnpack"
    with pytest.raises(Exception):
        ExportOptions().io = "float"


def test_prepare_lower_write_is_what_export_writes(tmp_path):
    """The three steps, called one by one on an ArchSpec, write the file ``export`` writes."""
    e = pipeline.export("espcn_w8a8", str(tmp_path / "a.tflite"), fmt="tflite", log=lambda _: None)
    p = pipeline.prepare(load_zoo("espcn_w8a8"), log=lambda _: None)
    opts = ExportOptions(format="tflite")
    pipeline.write(pipeline.lower(p.model, opts), tmp_path / "b.tflite", opts, pipeline.metadata(p, opts))
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
    meta = read_metadata(tmp_path / "b.tflite")
    assert json.loads(meta["qnas.export_options"]) == e.options
    assert e.options["weights"] == "initialised" and e.options["calibration"] == "synthetic"


def test_export_is_deterministic(tmp_path):
    """What benchmarks/export_hashes.py relies on to compare two commits."""
    digests = set()
    for i in range(2):
        pipeline.export("basic_mixed_anchor", str(tmp_path / f"{i}.onnx"), simplify=False, log=lambda _: None)
        digests.add(hashlib.sha256((tmp_path / f"{i}.onnx").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_a_failed_write_leaves_nothing(tmp_path):
    opts = ExportOptions(format="tflite")
    p = pipeline.prepare("espcn_w8a8", log=lambda _: None)
    graph = pipeline.lower(p.model, opts)
    with pytest.raises(BadInput):
        pipeline.write(graph, tmp_path / "missing" / "m.tflite", opts)
    assert list(tmp_path.iterdir()) == []
