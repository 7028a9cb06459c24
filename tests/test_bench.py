"""bench parity and bench latency on a tiny trained checkpoint and its exports."""
import json

import pytest

from qnas_deploy.cli import main
from qnas_deploy.data import training_pairs
from qnas_deploy.spec import uniform
from qnas_deploy.train import TrainConfig, train

from test_train import _images


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    data = _images(root / "data", n=2, size=48)
    spec = uniform("basic", {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1",
                             "upsample": "simple_3x3", "tail": "simple_3x3"}, 4, channels=6, blocks=1)
    ck = root / "m.pt"
    train(spec, training_pairs(data, 4), ck, TrainConfig(epochs=1, iters=2, batch=2, patch=8, calib_batches=1),
          progress=False, log=lambda m: None)
    files = []
    for fmt in ("onnx", "tflite"):
        out = root / f"m.{fmt}"
        assert main(["export", str(ck), "--format", fmt, "-o", str(out), "--input-size", "12x12"]) == 0
        files.append(str(out))
    return root, str(data), str(ck), files


def test_parity_json_has_per_file_fields_and_every_backend_is_exact(exported, capsys):
    root, data, ck, files = exported
    out = root / "parity.json"
    assert main(["bench", "parity", ck, *files, "--data", data, "--json", str(out), "--md", str(root / "p.md"),
                 "--diff-png", str(root / "worst.png"), "--tolerance-db", "1"]) == 0
    r = json.loads(out.read_text())
    labels = [k for k in r["files"] if k not in ("pytorch", "reference")]
    assert len(labels) == 3  # onnxruntime, LiteRT xnnpack, LiteRT builtin
    for k in labels:  # each runtime computes exactly what the reference in its arithmetic says
        e = r["files"][k]
        assert e["min_identical_pixels"] == 1.0 and e["max_abs_diff"] == 0, k
        assert {"delta_psnr_db", "identical_pixels"} <= set(next(iter(e["images"].values())))
        assert "max_abs_delta_psnr_db" in e
    # The reference in PyTorch's own float32 operations: equal but for float ties, which a
    # barely trained 4-bit net can turn into a few differing pixels.
    assert r["files"]["reference"]["min_identical_pixels"] >= 0.999
    assert (root / "worst.png").stat().st_size > 0 and "| reference | torch |" in (root / "p.md").read_text()


def test_parity_exits_1_when_a_file_misses_the_tolerance(exported, capsys):
    root, data, ck, files = exported
    assert main(["bench", "parity", ck, files[0], "--data", data, "--tolerance-db", "-1"]) == 1
    assert "missed" in capsys.readouterr().err


def test_parity_refuses_a_file_of_another_architecture(exported, capsys, tmp_path):
    root, data, ck, files = exported
    other = tmp_path / "o.onnx"
    assert main(["export", "espcn_w8a8", "-o", str(other)]) == 0
    capsys.readouterr()
    assert main(["bench", "parity", ck, str(other), "--data", data]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another architecture" in err[0]


def test_latency_rows_per_file_backend_and_threads(exported):
    root, data, ck, files = exported
    out = root / "lat.json"
    assert main(["bench", "latency", *files, "--size", "16x20", "--threads", "1", "--runs", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["backend"] for r in rows) == ["litert_builtin", "litert_xnnpack", "onnxruntime"]
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
            f"for f, b in [({files[0]!r}, 'onnxruntime'), ({files[1]!r}, 'litert_builtin')]:\n"
            "    assert measure(f, b, (16, 16), 1, 2, 1)['median_ms'] > 0\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_bitops_correlates_random_architectures(tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "bitops", "--samples", "3", "--size", "16x16", "--runs", "1", "--json", str(out),
                 "--plot", str(tmp_path / "b.png")]) == 0
    r = json.loads(out.read_text())
    assert len(r["rows"]) == 3 and len({json.dumps(x["layers"]) for x in r["rows"]}) == 3
    for c in r["correlation"].values():
        assert -1 <= c["kendall_tau"] <= 1 and -1 <= c["pearson_r"] <= 1
    assert all(x["onnxruntime_ms"] > 0 and x["litert_xnnpack_ms"] > 0 for x in r["rows"])
    assert (tmp_path / "b.png").stat().st_size > 0
