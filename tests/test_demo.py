"""qnas-deploy demo end to end with tiny settings (the real one runs in minutes)."""
import json

from qnas_deploy.cli import main
from qnas_deploy.demo import run_demo
from qnas_deploy.search import SearchConfig


def test_demo_writes_every_step_into_one_run_folder(tmp_path):
    out = tmp_path / "run"
    cfg = SearchConfig.quick(epochs=1, iters=2, batch=2, patch=8, channels=4, blocks=1)
    s = run_demo(out, datasets_root=str(tmp_path), progress=False, train_iters=2, train_epochs=1,
                 search_config=cfg, latency_runs=2, log=lambda m: None)
    for name in ("found.json", "found.alphas.png", "model.pt", "model.onnx", "model.tflite", "parity.json",
                 "latency.json", "summary.json", "comparison.png", "REPORT.md"):
        assert (out / name).is_file(), name
    assert s["validation"] == "embedded"  # no Set5 under this datasets root
    par = json.loads((out / "parity.json").read_text())
    runtimes = [v for k, v in par["files"].items() if k not in ("pytorch", "reference")]
    assert len(runtimes) == 3 and all(v["min_identical_pixels"] == 1.0 for v in runtimes)
    assert len(s["latency"]) == 3 and "## Parity" in (out / "REPORT.md").read_text()


def test_demo_refuses_a_used_folder_without_resume(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert main(["demo", "-o", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
