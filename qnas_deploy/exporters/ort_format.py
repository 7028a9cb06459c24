"""The ONNX file in onnxruntime Mobile's ORT format, by onnxruntime's own converter.

``python -m onnxruntime.tools.convert_onnx_models_to_ort`` (the tool onnxruntime documents
for mobile builds) optimises the graph as a session would (level ``all``: the QDQ groups
become ``QLinearConv``, the layout becomes NHWC) and saves the optimised graph as an ORT
flatbuffer, so a minimal onnxruntime build, which has no optimiser and no ONNX parser,
runs it as it is. The converter is run in its own process: it is a command-line tool,
and its output is its files.

The optimisations are baked for ``arm`` (the ``Fixed`` style for phones and boards: no x86
NCHWc kernels, int8 QDQ groups allowed); the file runs on x86 onnxruntime as well, which
the tests use to check it against the ``.onnx`` pixel for pixel. The converter also writes
the operator configuration a reduced build takes (``build.py --include_ops_by_config``,
with ``--enable_reduced_operator_type_support`` for the type-reduced kernels it lists);
the file keeps the ONNX file's metadata (``qnas.*``).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import QnasError

PLATFORM = "arm"
# Beside ``model.ort``: the operators (and their types) a reduced onnxruntime build needs.
CONFIG_SUFFIX = ".required_operators_and_types.config"


def to_ort(onnx_bytes: bytes, name: str = "model") -> tuple[bytes, str]:
    """(the ORT format file, its operator configuration text) of an ONNX file's bytes;
    ``name`` is the ``.ort`` file's name the configuration says it was made from."""
    with tempfile.TemporaryDirectory(prefix="qnas-ort-") as d:
        src, out = Path(d) / "model.onnx", Path(d) / "out"
        src.write_bytes(onnx_bytes)
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src),
               "--output_dir", str(out), "--optimization_style", "Fixed", "--target_platform", PLATFORM,
               "--enable_type_reduction"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        ort_file, config = out / "model.ort", out / f"model{CONFIG_SUFFIX}"
        if r.returncode != 0 or not ort_file.is_file() or not config.is_file():
            last = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
            raise QnasError(f"onnxruntime's ORT converter failed: {last}")
        # The converter names the temporary file it read; name the one the user gets.
        text = config.read_text().replace(str(ort_file), name)
        return ort_file.read_bytes(), text


def check(data: bytes) -> None:
    """Load the ORT format ``data`` in onnxruntime, as an app's minimal build would."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.load_model_format", "ORT")
    ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
