"""bench bitops: BitOps against measured latency of random architectures."""
import json

import pytest

from qnas_deploy.cli import main


@pytest.mark.slow  # ~11 s of random architectures
def test_bitops_correlates_random_architectures(tmp_path, spec_of):
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
    assert all(wb == ab == 8 for x in rows for _, _, wb, ab, *_ in x["layers"])
    for x in rows:
        cost = summary(spec_of("basic", x["layers"], 6, 1))
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
            assert predict(t, spec_of("basic", x["layers"], 6, 1), b) == pytest.approx(x[f"{b}_predicted_ms"])
        pred = np.array([x[f"{b}_predicted_ms"] for x in rows])
        meas = np.array([x[f"{b}_ms"] for x in rows])
        a = r["table_accuracy"][b]
        assert a["mape"] == pytest.approx(float(np.mean(np.abs(pred - meas) / meas)))
        assert math.isfinite(a["kendall_tau"]) and -1 <= a["kendall_tau"] <= 1


def test_bitops_files_come_from_the_export_pipeline(tmp_path, spec_of):
    """The architectures bench bitops times are exported as every file is: metadata, checks."""
    from qnas_deploy.bench.bitops import export_architecture
    from qnas_deploy.runtimes import file_options

    spec = spec_of("basic", [[n, op, 4, 4] for n, op in [
        ("head.0", "simple_3x3"), ("head.1", "simple_3x3"), ("body.0.0", "simple_3x3"), ("body.0.1", "simple_3x3"),
        ("body.0.skip", "simple_1x1"), ("upsample", "simple_3x3"), ("tail.0", "simple_1x1"), ("tail.1", "simple_1x1")]],
        6, 1).with_(name="tiny")
    row, onnx_path, tflite_path = export_architecture(spec, (16, 16), tmp_path)
    for path in (onnx_path, tflite_path):
        opts = file_options(path)
        assert opts["found"]["name"] == "tiny" and opts["options"]["weights"] == "initialised"
    assert row["bitops_32x32"] == 16 * row["macs_32x32"]
