"""bench parity and bench latency on a tiny trained checkpoint and its exports."""
import json

import pytest

from qnas_deploy.cli import main
from qnas_deploy.data import training_pairs
from qnas_deploy.spec import uniform
from qnas_deploy.train import TrainConfig, train


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sr_folder):
    root = tmp_path_factory.mktemp("bench")
    data = sr_folder(root / "data", n=2, size=48)
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


def test_bitops_correlates_random_architectures(tmp_path):
    """bench bitops end to end on 3 small architectures: every row timed on every backend,
    its BitOps and MACs those of the cost model, correlations computed from the rows, and a
    saved table whose fixed part and predictions are the ones the benchmark reported."""
    import math

    import numpy as np
    from scipy import stats

    from qnas_deploy.bench.latency_table import BACKENDS
    from qnas_deploy.cost import summary
    from qnas_deploy.cost.latency import layers_ms, load, predict

    out, table = tmp_path / "b.json", tmp_path / "table.json"
    assert main(["bench", "bitops", "--samples", "3", "--size", "16x16", "--runs", "1", "--bits", "8",
                 "--table-runs", "1", "--fit", "1", "--channels", "6", "--blocks", "1", "--json", str(out),
                 "--table-json", str(table), "--plot", str(tmp_path / "b.png")]) == 0
    r = json.loads(out.read_text())
    rows = r["rows"]
    assert len(rows) == 3 and len({json.dumps(x["layers"]) for x in rows}) == 3
    assert all(wb == ab == 8 for x in rows for _, _, wb, ab in x["layers"])
    for x in rows:
        cost = summary(_spec_of("basic", x["layers"], 6, 1))
        assert (x["bitops_32x32"], x["macs_32x32"]) == (cost["bitops_32x32"], cost["macs_32x32"])
        assert x["bitops_32x32"] == 64 * x["macs_32x32"]  # 8-bit weights times 8-bit activations
        assert all(math.isfinite(x[f"{b}_ms"]) and x[f"{b}_ms"] > 0 for b in BACKENDS)
    assert len({x["macs_32x32"] for x in rows}) > 1  # else no rank correlation is defined
    assert set(r["correlation"]) == set(BACKENDS)
    for b, c in r["correlation"].items():
        lat = [x[f"{b}_ms"] for x in rows]
        assert all(math.isfinite(v) and -1 <= v <= 1 for v in c.values()), c
        assert c["kendall_tau"] == pytest.approx(stats.kendalltau([x["bitops_32x32"] for x in rows], lat).statistic)
        assert c["macs_pearson_r"] == pytest.approx(stats.pearsonr([x["macs_32x32"] for x in rows], lat).statistic)
        # BitOps is MACs times 64 here: both rank and scale the rows alike
        assert c["kendall_tau"] == pytest.approx(c["macs_kendall_tau"])
        assert c["pearson_r"] == pytest.approx(c["macs_pearson_r"])
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The saved table: every entry timed, its fixed part the fit architecture's residual, and
    # each held-out architecture predicted as the benchmark did (fixed + its layers).
    t = load(table)
    assert all(e[f"{b}_ms"] > 0 for e in t["entries"].values() for b in BACKENDS)
    (fit_row,) = r["fit_rows"]
    for b in BACKENDS:
        assert t["fixed_ms"][b] == pytest.approx(fit_row[f"{b}_ms"] - layers_ms(t, fit_row["layers"], b))
        for x in rows:
            assert predict(t, _spec_of("basic", x["layers"], 6, 1), b) == pytest.approx(x[f"{b}_predicted_ms"])
        pred = np.array([x[f"{b}_predicted_ms"] for x in rows])
        meas = np.array([x[f"{b}_ms"] for x in rows])
        a = r["table_accuracy"][b]
        assert a["mape"] == pytest.approx(float(np.mean(np.abs(pred - meas) / meas)))
        assert math.isfinite(a["kendall_tau"]) and -1 <= a["kendall_tau"] <= 1


def _spec_of(space, layers, channels=None, blocks=None):
    from qnas_deploy.spaces import get_space
    from qnas_deploy.spec import ArchSpec, LayerSpec

    sp = get_space(space)
    return ArchSpec(space=space, scale=4, channels=channels or sp.default_channels, blocks=blocks or sp.default_blocks,
                    layers=tuple(LayerSpec(*l) for l in layers))


def test_latency_table_covers_every_candidate_of_the_space():
    from qnas_deploy.bench.latency_table import _candidates, slot_sizes
    from qnas_deploy.spaces import get_space

    sizes = slot_sizes("basic", (20, 24))
    assert sizes["head.0"] == (3, 36, 20, 24) and sizes["tail.1"] == (36, 3, 80, 96)  # the tail runs at HR
    sp = get_space("basic")
    covered = {(l.name, l.op, l.w_bits) for s in _candidates("basic", (4, 8)) for l in s.layers}
    wanted = {(s.name, op, b) for s in sp.layout(36, 3, 4) for op in sp.ops_for(s.role, "small") for b in (4, 8)}
    assert covered == wanted


def test_latency_table_layer_graph_computes_the_layer():
    """What the table times is the layer the network runs: its standalone integer graph
    agrees with the PyTorch layer between two 1/255 grids (one step at rounding ties)."""
    import numpy as np
    import torch

    from qnas_deploy.bench.latency_table import layer_graph
    from qnas_deploy.calibrate import calibrate
    from qnas_deploy.exporters import reference
    from qnas_deploy.exporters.export import calibration_batches
    from qnas_deploy.spaces import build_model

    spec = _spec_of("basic", [[n, op, 4, 4] for n, op in [
        ("head.0", "simple_3x3"), ("head.1", "simple_3x3"), ("body.0.0", "conv_3x1_1x3"), ("body.0.1", "simple_5x5"),
        ("body.0.skip", "simple_1x1"), ("body.1.0", "simple_3x3"), ("body.1.1", "simple_3x3"),
        ("body.1.skip", "simple_1x1"), ("body.2.0", "simple_3x3"), ("body.2.1", "simple_3x3"),
        ("body.2.skip", "simple_1x1"), ("upsample", "simple_3x3"), ("tail.0", "simple_3x3"), ("tail.1", "simple_1x1")]])
    torch.manual_seed(0)
    model = build_model(spec)
    calibrate(model, calibration_batches(spec, None, None))
    layer = model.eval().layers["body_0_0"]
    with torch.no_grad():
        g = layer_graph(layer, 36, 36, "body.0.0")
        q = np.random.default_rng(0).integers(0, 256, (1, 36, 10, 12), dtype=np.uint8)
        want = torch.clamp(torch.round(layer(torch.from_numpy(q).float() / 255) * 255), 0, 255).numpy()
    got = reference.run(g, q).astype(np.float32)
    assert np.abs(got - want).max() <= 1 and np.mean(got == want) >= 0.99


def test_pareto_front_keeps_the_undominated_points(tmp_path):
    from qnas_deploy.bench.pareto import front, plot

    pts = [(1.0, 20.0), (2.0, 22.0), (2.0, 21.0), (3.0, 21.5), (4.0, 23.0), (0.5, 19.0), (1.0, 20.0)]
    # (2, 21) and (3, 21.5) are beaten by (2, 22); the duplicate (1, 20) points do not dominate each other.
    assert front(pts) == [5, 0, 6, 1, 4]
    entries = [{"name": f"a{i}", "cost": c, "psnr": q} for i, (c, q) in enumerate(pts)] + [{"name": "no", "cost": None}]
    plot(entries, tmp_path / "p.png", "psnr", "PSNR", [("cost", "cost", 1, True)], baseline=19.5)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
