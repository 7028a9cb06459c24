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
