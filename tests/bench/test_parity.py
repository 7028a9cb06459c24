"""bench parity on a tiny trained checkpoint and its exports."""
import json

from qnas_deploy.cli import main


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
    assert (root / "worst.png").stat().st_size > 0 and "| reference | pytorch |" in (root / "p.md").read_text()


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
