"""The per-layer latency table: candidates, slot sizes and the graphs it times."""


def test_latency_table_covers_every_candidate_of_the_space():
    from qnas_deploy.bench.latency_table import _candidates, slot_sizes
    from qnas_deploy.spaces import get_space

    sizes = slot_sizes("basic", (20, 24))
    assert sizes["head.0"] == (3, 36, 20, 24) and sizes["tail.1"] == (36, 3, 80, 96)  # the tail runs at HR
    sp = get_space("basic")
    covered = {(l.name, l.op, l.w_bits) for s in _candidates("basic", (4, 8)) for l in s.layers}
    wanted = {(s.name, op, b) for s in sp.layout(36, 3, 4) for op in sp.ops_for(s.role, "small") for b in (4, 8)}
    assert covered == wanted


def test_latency_table_layer_graph_computes_the_layer(spec_of):
    """What the table times is the layer the network runs: its standalone integer graph
    agrees with the PyTorch layer between two 1/255 grids (one step at rounding ties)."""
    import numpy as np
    import torch

    from qnas_deploy.bench.latency_table import layer_graph
    from qnas_deploy.calibrate import calibrate
    from qnas_deploy.exporters import reference
    from qnas_deploy.exporters.export import calibration_batches
    from qnas_deploy.spaces import build_model

    spec = spec_of("basic", [[n, op, 4, 4] for n, op in [
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


def test_latency_table_with_widths_covers_every_channel_pair():
    """With widths, the candidates hold every (operation, bits, input and output channels) a
    layer can meet: a free layer's own widths, and the pairs its reader sees."""
    import itertools

    from qnas_deploy.bench.latency_table import _candidates
    from qnas_deploy.spaces import get_space

    sp, widths = get_space("mobile"), (16, 24, 32)
    covered = {(s.name, l.op, s.c_in, s.c_out) for spec in _candidates("mobile", (8,), 32, 2, widths)
               for l, s in zip(spec.layers, sp.slots_of(spec))}
    wanted = set()
    for ws in itertools.product(widths, repeat=3):  # head.0, body.0, body.1
        for s in sp.slots(32, 2, 4, dict(zip(["head.0", "body.0", "body.1"], ws))):
            wanted |= {(s.name, op, s.c_in, s.c_out) for op in sp.ops_for(s.role, "small")}
    assert covered == wanted


def test_bench_bitops_with_widths_predicts_every_width(tmp_path):
    """End to end on the mobile space: random architectures draw widths, the table is measured
    at them, and every held-out architecture is predicted from it (fixed part + its layers)."""
    import json

    import pytest

    from qnas_deploy.cli import main
    from qnas_deploy.cost.latency import load, predict
    from qnas_deploy.spec import from_dict

    out, table = tmp_path / "b.json", tmp_path / "t.json"
    assert main(["bench", "bitops", "--space", "mobile", "--widths", "16,24", "--samples", "3", "--size", "12x12",
                 "--runs", "1", "--bits", "8", "--table-runs", "1", "--fit", "1", "--channels", "16",
                 "--blocks", "1", "--json", str(out), "--table-json", str(table)]) == 0
    r, t = json.loads(out.read_text()), load(table)
    assert t["version"] == 2 and t["widths"] == [16, 24] and t["slots"]["body.0"]["free_width"]
    assert not t["slots"]["upsample"]["free_width"]
    assert {(e["c_in"], e["c_out"]) for e in t["entries"].values() if e["op"] == "conv_3x1_1x3"} == \
        {(16, 16), (16, 24), (24, 16), (24, 24)}
    for row in r["rows"]:
        free = {n: c_out for n, _, _, _, _, c_out in row["layers"] if n != "upsample"}
        spec = from_dict({"format": "qnas-deploy/found", "version": 2, "space": "mobile", "scale": 4, "channels": 16,
                          "blocks": 1, "adq": False, "layers": [
                              {"name": n, "op": op, "w_bits": wb, "a_bits": ab, **({"width": free[n]} if n in free else {})}
                              for n, op, wb, ab, _, _ in row["layers"]]})
        for b in t["backends"]:
            assert predict(t, spec, b) == pytest.approx(row[f"{b}_predicted_ms"])
    assert main(["bench", "bitops", "--space", "espcn", "--widths", "all", "--samples", "3"]) == 2
    assert main(["bench", "bitops", "--space", "mobile", "--widths", "20", "--samples", "3"]) == 2
