"""bench latency on the exports of a tiny trained checkpoint."""
import json

import pytest

from qnas_deploy.cli import main


def test_latency_rows_per_file_backend_and_threads(exported):
    root, data, ck, files = exported
    out = root / "lat.json"
    assert main(["bench", "latency", *files, "--size", "16x20", "--threads", "1", "--runs", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["backend"] for r in rows) == ["litert-builtin", "litert-xnnpack", "onnxruntime"]
    for r in rows:
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["peak_rss_mb"] > 0 and r["size"] == "16x20"


@pytest.mark.parametrize("args, needle", [
    (["missing.onnx"], "missing.onnx"),
    (["--threads", "0,1", "x.onnx"], "--threads"),
])
def test_latency_bad_input_is_one_line(capsys, args, needle):
    assert main(["bench", "latency", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_latency_runs_without_pytorch(exported):
    """What a board needs: the runtime and this package, no PyTorch."""
    import subprocess
    import sys

    root, data, ck, files = exported
    code = ("import sys; sys.modules['torch'] = None\n"
            "from qnas_deploy.bench.latency import measure\n"
            f"for f, b in [({files[0]!r}, 'onnxruntime'), ({files[1]!r}, 'litert-builtin')]:\n"
            "    assert measure(f, b, (16, 16), 1, 2, 1, isolate=False).median_ms > 0\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("corrupt", ["truncated", "garbage", "empty"])
def test_a_corrupt_tflite_is_one_error_line(corrupt, tmp_path, capsys, espcn_files):
    from pathlib import Path

    data = Path(espcn_files[".tflite"]).read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a flatbuffer at all", "empty": b""}[corrupt])
    assert main(["bench", "latency", str(bad), "--runs", "1", "--warmup", "0", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: "), err
