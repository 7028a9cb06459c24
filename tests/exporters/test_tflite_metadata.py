"""Standard TFLite Metadata (``TFLITE_METADATA``, metadata_schema.fbs) in every exported
TFLite file, read back by an independent reader: ``flatc`` (Debian's
``flatbuffers-compiler``, the schema compiler's C++ parser) turns the buffer into JSON
with the published schema; the buffer is taken out of the file with the ``tflite``
package's reader. Without flatc these tests skip, except in CI (``CI`` set), which
installs it (the README's apt line).
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qnas_deploy.cli import main
from qnas_deploy.exporters import export as pipeline
from qnas_deploy.exporters import tflite_metadata
from qnas_deploy.runtimes import RUNTIMES, file_options
from qnas_deploy.runtimes.litert import metadata_buffers
from qnas_deploy.zoo import load_zoo, names

SCHEMA_DIR = Path(tflite_metadata.__file__).parent / "schema"
QUANTIZED = [n for n in names() if not load_zoo(n).float_only]


@pytest.fixture(scope="module")
def flatc():
    exe = shutil.which("flatc")
    if exe is None:
        msg = "flatc not installed (apt-get install flatbuffers-compiler)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def read_back(flatc, tflite_path: Path, tmp_path: Path) -> dict:
    """The file's TFLITE_METADATA as flatc reads it with the published schema."""
    buf = metadata_buffers(tflite_path.read_bytes())[tflite_metadata.NAME]
    assert buf[4:8] == b"M001"  # the schema's file identifier
    raw = tmp_path / f"{tflite_path.stem}.bin"
    raw.write_bytes(buf)
    subprocess.run([flatc, "--json", "--strict-json", "--raw-binary", "-o", str(tmp_path),
                    str(SCHEMA_DIR / "metadata_schema.fbs"), "--", str(raw)], check=True, capture_output=True)
    return json.loads((tmp_path / f"{tflite_path.stem}.json").read_text())


def test_generated_classes_are_the_schema(flatc, tmp_path):
    """The committed Python classes are what flatc generates from the committed schema."""
    fbs = tmp_path / "metadata_schema.fbs"
    fbs.write_text((SCHEMA_DIR / "metadata_schema.fbs").read_text().replace("namespace tflite;",
                                                                           "namespace tflite_metadata;"))
    subprocess.run([flatc, "--python", "--gen-onefile", "-o", str(tmp_path), str(fbs)], check=True,
                   capture_output=True)
    assert (tmp_path / "metadata_schema_generated.py").read_text() == \
        (SCHEMA_DIR / "metadata_schema_generated.py").read_text()


@pytest.mark.parametrize("name", QUANTIZED)
def test_every_zoo_file_has_standard_metadata(flatc, tmp_path, name):
    out = tmp_path / f"{name}.tflite"
    pipeline.export(name, str(out), fmt="tflite", input_size=(24, 20), log=lambda _: None)
    m = read_back(flatc, out, tmp_path)
    spec = load_zoo(name)
    assert m["name"] == name and m["author"] == "qnas-deploy" and m["license"] == "Apache-2.0"
    assert m["min_parser_version"] == "1.0.0"
    assert m["version"].startswith("found.json sha256 ") and "weights initialised" in m["version"]
    assert f"x{spec.scale} super-resolution" in m["description"] and "litert-xnnpack" in m["description"]
    (sg,) = m["subgraph_metadata"]
    (inp,), (outp,) = sg["input_tensor_metadata"], sg["output_tensor_metadata"]
    for t, size in ((inp, (24, 20)), (outp, (24 * spec.scale, 20 * spec.scale))):
        assert t["content"]["content_properties_type"] == "ImageProperties"
        props = t["content"]["content_properties"]
        assert props["color_space"] == "RGB"
        assert (props["default_size"]["height"], props["default_size"]["width"]) == size
        assert t["stats"] == {"max": [255.0], "min": [0.0]}
        assert t["description"]
    (unit,) = inp["process_units"]
    assert unit["options_type"] == "NormalizationOptions"
    assert unit["options"] == {"mean": [0.0], "std": [255.0]}
    assert "process_units" not in outp
    # The project's own entries are still there, and still read.
    assert file_options(out)["found"] == spec.to_dict()


@pytest.mark.parametrize("io, lo, hi", [("int8", -128.0, 127.0), ("float", 0.0, 1.0)])
def test_value_range_follows_the_io_type(flatc, tmp_path, io, lo, hi):
    out = tmp_path / f"m_{io}.tflite"
    pipeline.export("espcn_w8a8", str(out), fmt="tflite", io=io, log=lambda _: None)
    sg = read_back(flatc, out, tmp_path)["subgraph_metadata"][0]
    for t in sg["input_tensor_metadata"] + sg["output_tensor_metadata"]:
        assert t["stats"] == {"max": [hi], "min": [lo]}
    # pixel / 255 is the real value of every container: one normalisation for all of them
    assert sg["input_tensor_metadata"][0]["process_units"][0]["options"] == {"mean": [0.0], "std": [255.0]}


def test_author_and_license_from_the_command_line(flatc, tmp_path):
    found = tmp_path / "found.json"
    found.write_text(json.dumps(dict(load_zoo("espcn_w8a8").to_dict(), name="mine")))
    plain, given = tmp_path / "plain.tflite", tmp_path / "given.tflite"
    assert main(["export", str(found), "--format", "tflite", "-o", str(plain)]) == 0
    assert main(["export", str(found), "--format", "tflite", "-o", str(given), "--author", "Ada",
                 "--license", "MIT"]) == 0
    # A user's own architecture (or trained weights) states no license unless told.
    assert "license" not in read_back(flatc, plain, tmp_path)
    m = read_back(flatc, given, tmp_path)
    assert (m["author"], m["license"]) == ("Ada", "MIT")
    assert file_options(given)["options"]["license"] == "MIT"


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin"])
def test_metadata_does_not_disturb_the_interpreter(tmp_path, kernels):
    """The file with metadata computes what the same graph without it computes."""
    from qnas_deploy.exporters.options import ExportOptions

    out = tmp_path / "m.tflite"
    pipeline.export("basic_mixed", str(out), fmt="tflite", log=lambda _: None)
    p = pipeline.prepare("basic_mixed", log=lambda _: None)
    opts = ExportOptions(format="tflite")
    bare = tmp_path / "bare.tflite"
    meta = {k: v for k, v in pipeline.metadata(p, opts).items() if k != tflite_metadata.NAME}
    pipeline.write(pipeline.lower(p.model, opts), bare, opts, meta)
    assert tflite_metadata.NAME not in metadata_buffers(bare.read_bytes())
    lr = np.random.default_rng(0).integers(0, 256, (13, 17, 3), dtype=np.uint8)
    run = RUNTIMES[f"litert-{kernels}"].image_runner
    assert np.array_equal(run(out, threads=1)(lr), run(bare, threads=1)(lr))
