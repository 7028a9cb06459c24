"""QuantNAS search: supernet, losses, the loop, resume and the CLI (tiny settings)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from qnas_deploy.cli import main
from qnas_deploy.quant import quant_noise
from qnas_deploy.search import MODES, SearchConfig, Supernet, qnoise_scale, search
from qnas_deploy.search.losses import entropy, entropy_weight, expected_bitops, uniform_bitops
from qnas_deploy.spaces import build_model
from qnas_deploy.spec import load

TINY = dict(epochs=3, iters=2, batch=2, patch=8, channels=6, blocks=1, lr=1e-2, alpha_lr=3e-2, entropy=1e-2)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6), size=(48, 48), mode="bilinear")
        arr = (smooth[0].permute(1, 2, 0).numpy() * 200 + rng.integers(0, 40, (48, 48, 3))).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"im{i}.png")
    return folder


def _pairs(folder):
    from qnas_deploy.data import training_pairs

    return training_pairs(folder, 4)


def test_alphas_on_simplex_and_lcq_normalised():
    net = Supernet("basic", (4, 8), "san", channels=6, blocks=1)
    net.measure_sizes()
    for m in net.mixed.values():
        with torch.no_grad():
            m.alpha_logits.normal_()
        a = m.alphas()
        assert (a >= 0).all() and abs(float(a.detach().sum()) - 1) < 1e-6
        assert a.shape == (len(m.ops), 2)
    keys = list(net.mixed)
    macs = [net.edge_cost[k] for k in keys]
    fresh = Supernet("basic", (4, 8), "san", channels=6, blocks=1)
    fresh.measure_sizes()
    lcq = expected_bitops([fresh.mixed[k].alphas() for k in keys], macs, (4, 8)) / uniform_bitops(macs, (4, 8))
    assert abs(float(lcq.detach()) - 1.0) < 1e-6
    # all the mass on the cheapest edge of every layer: far below 1
    cheapest = []
    for m in macs:
        a = torch.zeros(len(m), 2)
        a[int(torch.argmin(m)), 0] = 1
        cheapest.append(a)
    assert float(expected_bitops(cheapest, macs, (4, 8))) / uniform_bitops(macs, (4, 8)) < 0.5


def test_entropy_schedule_and_entropy():
    assert [entropy_weight(e, 1e-4) for e in (0, 1, 1.5, 2)] == [0, 0, 0, 0]
    ws = [entropy_weight(e, 1e-4) for e in (2.5, 3, 5, 10, 20)]
    assert all(b > a > 0 for a, b in zip(ws, ws[1:]))
    uniform = torch.full((4, 2), 1 / 8)
    assert abs(float(entropy([uniform])) - np.log(8)) < 1e-6
    one_hot = torch.zeros(4, 2)
    one_hot[0, 0] = 1
    assert float(entropy([one_hot])) < 1e-6


@pytest.mark.parametrize("bits", [4, 8])
def test_san_noise_scale_is_eq6(bits):
    w = torch.randn(16, 8, 3, 3)
    s = qnoise_scale(w, bits, per_channel=False)
    delta = (w.max() - w.min()) / (2 ** bits - 1)
    assert torch.allclose(s, delta / 2)
    # the core's eq. 6 sampler has the same standard deviation
    g = torch.Generator().manual_seed(0)
    samples = torch.stack([quant_noise(w, bits, g) for _ in range(50)])
    assert abs(float(samples.std() / s) - 1) < 0.02
    per_ch = qnoise_scale(w, bits, per_channel=True)
    assert per_ch.shape == (16, 1, 1, 1)
    assert torch.allclose(per_ch[3, 0, 0, 0], (w[3].max() - w[3].min()) / (2 ** bits - 1) / 2)
    assert float(qnoise_scale(w, 32, per_channel=False)) == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_modes_run_and_derive(mode):
    net = Supernet("rfdn" if mode == "san" else "basic", (4, 8), mode, channels=12, blocks=1)
    net.train()
    y = net(torch.rand(1, 3, 16, 16))
    y.mean().backward()
    assert all(p.grad is not None for p in net.alpha_parameters())
    spec = net.derive()
    build_model(spec)
    assert {l.w_bits for l in spec.layers} <= {4, 8}


def test_quick_search_writes_valid_found_json(images, tmp_path):
    out = tmp_path / "found.json"
    r = search(SearchConfig(**TINY), _pairs(images), out, progress=False, log=lambda m: None)
    spec = load(out)
    build_model(spec)
    assert spec.search["space"] == "basic" and spec.search["bits"] == [4, 8]
    assert set(spec.search["final_alphas"]) == {l.name.replace(".", "_") for l in spec.layers}
    assert spec.cost["bitops_32x32"] > 0
    assert len(r.history) == 3
    assert (tmp_path / "found.alphas.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "found.history.json").read_text())["epochs"]) == 3


def test_resume_equals_uninterrupted(images, tmp_path):
    pairs = _pairs(images)
    a = search(SearchConfig(**TINY), pairs, tmp_path / "a.json", progress=False, log=lambda m: None)

    def stop_after_two(msg):
        if msg.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(SearchConfig(**TINY), pairs, tmp_path / "b.json", progress=False, log=stop_after_two)
    assert not (tmp_path / "b.json").exists()
    b = search(SearchConfig(**TINY), pairs, tmp_path / "b.json", resume=True, progress=False, log=lambda m: None)
    assert a.history == b.history
    assert a.spec.layers == b.spec.layers


def test_cli_search_and_bad_input(images, tmp_path, capsys):
    out = tmp_path / "f.json"
    args = ["search", "--data", str(images), "-o", str(out), "--epochs", "1", "--iters", "1", "--patch", "8",
            "--batch", "2", "--channels", "6"]
    assert main(args) == 0
    assert load(out).space == "basic"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--data", str(empty), "-o", str(tmp_path / "g.json")], "no images"),
             (["--data", str(images), "--bits", "3,8", "-o", str(tmp_path / "g.json")], "--bits"),
             (["--data", str(images), "-o", str(tmp_path / "nope" / "g.json")], "does not exist")]
    for bad, needle in cases:
        capsys.readouterr()
        assert main(["search", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "g.json").exists()


def test_ctrl_c_inside_an_epoch_saves_and_resumes(images, tmp_path, monkeypatch):
    from qnas_deploy.data import PatchSampler
    from qnas_deploy.search.run import checkpoint_path

    pairs = _pairs(images)
    real, calls = PatchSampler.batch, {"n": 0}

    def interrupted(self, n):
        calls["n"] += 1
        if calls["n"] == 3:  # the alpha batch of the second iteration of the first epoch
            raise KeyboardInterrupt
        return real(self, n)

    monkeypatch.setattr(PatchSampler, "batch", interrupted)
    msgs = []
    with pytest.raises(KeyboardInterrupt):
        search(SearchConfig(**TINY), pairs, tmp_path / "c.json", progress=False, log=msgs.append)
    st = torch.load(checkpoint_path(tmp_path / "c.json"), weights_only=True)
    assert st["epoch"] == 0 and st["iter"] == 1 and "--resume" in msgs[-1]
    monkeypatch.setattr(PatchSampler, "batch", real)
    r = search(SearchConfig(**TINY), pairs, tmp_path / "c.json", resume=True, progress=False, log=lambda m: None)
    assert len(r.history) == 3 and (tmp_path / "c.json").is_file()


def test_latency_table_steers_the_search(images, tmp_path):
    """With a latency table (bench bitops --table-json) the penalty is its milliseconds:
    a table where every 4-bit layer is 100x slower than its 8-bit twin turns the search
    to 8 bits, the opposite of what BitOps asks."""
    from qnas_deploy.bench.latency_table import FORMAT, key, slot_sizes
    from qnas_deploy.spaces import get_space

    sp = get_space("basic")
    sizes = slot_sizes("basic", (16, 16), channels=6, blocks=1)
    roles = {s.name: s.role for s in sp.layout(6, 1, 4)}
    entries = {}
    for name, (ci, co, h, w) in sizes.items():
        for op in sp.ops_for(roles[name], "small"):
            for b in (4, 8):
                entries[key(op, b, b, ci, co, h, w)] = {"onnxruntime_ms": 100.0 if b == 4 else 1.0}
    table = {"format": FORMAT, "space": "basic", "bits": [4, 8], "backends": ["onnxruntime"], "entries": entries,
             "slots": {n: {"c_in": v[0], "c_out": v[1], "height": v[2], "width": v[3]} for n, v in sizes.items()}}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    cfg = SearchConfig(**{**TINY, "penalty": 10.0, "entropy": 0.0}, latency_table=str(path))
    r = search(cfg, _pairs(images), tmp_path / "found.json", progress=False, log=lambda m: None)
    assert {l.w_bits for l in r.spec.layers} == {8}
    # A table for other channels is refused with one clear line.
    with pytest.raises(Exception, match="build it with bench bitops --channels"):
        search(SearchConfig(**{**TINY, "channels": 12}, latency_table=str(path)), _pairs(images),
               tmp_path / "g.json", progress=False, log=lambda m: None)
