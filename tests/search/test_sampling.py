"""Sampling search on Optuna with the one-shot supernet: every strategy on tiny images."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("optuna")

from qnas_deploy.errors import BadInput
from qnas_deploy.cli import main
from qnas_deploy.search.oneshot import OneShotConfig, build_supernet, sample_path, train_oneshot
from qnas_deploy.spec import load


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, sr_folder):
    return sr_folder(tmp_path_factory.mktemp("d") / "data", n=3, size=96)


def _search(strategy, data, out, *extra):
    return main(["search", "--strategy", strategy, "--space", "mobile", "--quick", "--channels", "8", "--data",
                 str(data), "--patch", "8", "--trials", "4", "--oneshot-iters", "6", "--qaft-iters", "2", "--top", "2",
                 "-o", str(out), *extra])


@pytest.mark.parametrize("strategy", ["evolution", "bayes", "random"])
def test_each_strategy_writes_found_json_files_that_export_exactly(strategy, tiny_data, tmp_path, capsys):
    out = tmp_path / "found.json"
    assert _search(strategy, tiny_data, out) == 0
    spec = load(out)
    assert spec.search["strategy"] == strategy and "qaft_psnr_db" in spec.search
    r = json.loads((tmp_path / "found.trials.json").read_text())
    assert len(r["trials"]) == 4 and r["front"] and (tmp_path / "found.front.png").stat().st_size > 0
    ck = r["best"]["checkpoint"]
    onnx, tfl = tmp_path / "m.onnx", tmp_path / "m.tflite"
    assert main(["export", ck, "-o", str(onnx)]) == 0
    assert main(["export", ck, "--format", "tflite", "-o", str(tfl), "--input-size", "24x24"]) == 0
    js = tmp_path / "p.json"
    assert main(["bench", "parity", ck, str(onnx), str(tfl), "--data", str(tiny_data), "--json", str(js),
                 "--tolerance-db", "100"]) == 0
    for k, e in json.loads(js.read_text())["files"].items():
        if k not in ("pytorch", "reference"):  # 0 steps: the runtime's integer arithmetic, reproduced
            assert e["min_identical_pixels"] == 1.0 and e["max_abs_diff"] == 0, k


def test_a_stopped_search_resumes_with_its_trials(tiny_data, tmp_path, capsys):
    out = tmp_path / "found.json"
    assert _search("random", tiny_data, out) == 0
    capsys.readouterr()
    assert _search("random", tiny_data, out, "--trials", "6") == 0
    err = capsys.readouterr().err
    assert "4 trials already" in err
    assert len(json.loads((tmp_path / "found.trials.json").read_text())["trials"]) == 6


def test_a_latency_budget_keeps_the_result_within_it(tiny_data, tmp_path, capsys):
    free = tmp_path / "free" / "found.json"
    free.parent.mkdir()
    assert _search("random", tiny_data, free) == 0
    costs = sorted(t["cost"] for t in json.loads((free.parent / "found.trials.json").read_text())["trials"])
    budget = costs[1]  # the same seed draws the same first trials: at least two fit
    out = tmp_path / "found.json"
    assert _search("random", tiny_data, out, "--latency-budget", str(budget)) == 0
    r = json.loads((tmp_path / "found.trials.json").read_text())
    assert r["best"]["cost"] <= budget and load(out).search["latency_budget"] == budget
    assert all(t["feasible"] == (t["cost"] <= budget) for t in r["trials"])
    assert any(not t["feasible"] for t in r["trials"])


@pytest.mark.parametrize("rule", ["single", "sandwich"])
def test_one_shot_training_trains_the_sampled_paths_only(tiny_data, rule):
    """One step trains exactly its paths: single, one drawn path; sandwich (seed 004), the
    largest, the smallest and the drawn ones. Other operations' weights and other bit
    widths' quantizers stay untouched."""
    from qnas_deploy.data import training_pairs
    from qnas_deploy.search.oneshot import extreme_path

    cfg = OneShotConfig(space="mobile", channels=8, blocks=1, iters=1, batch=2, patch=8, rule=rule, random_paths=1)
    net = build_supernet(cfg)  # the same seeded initial weights train_oneshot starts from
    used = {k: set() for k in net.mixed}
    rng = np.random.default_rng([cfg.seed, 0])
    steps = [lambda: sample_path(net, rng)] if rule == "single" else \
        [lambda: extreme_path(net, True), lambda: extreme_path(net, False), lambda: sample_path(net, rng)]
    for pick in steps:
        pick()
        for k, m in net.mixed.items():
            used[k].add(m.path[:2])
    if rule == "sandwich":
        assert all(len({i for i, _ in u}) >= 2 for u in used.values())  # largest and smallest differ
    trained = train_oneshot(cfg, training_pairs(tiny_data, 4), tiny_data.parent / f"os_{rule}.pt", progress=False,
                            log=lambda m: None)
    for k, u in used.items():
        ops = {i for i, _ in u}
        for e, edge in enumerate(trained.mixed[k].edges):
            moved = not torch.equal(net.mixed[k].edges[e].convs[0].weight, edge.convs[0].weight)
            assert moved == (e in ops), (k, e)
            qs = edge.convs[0].weight_q
            assert {b for b, q in enumerate(qs) if bool(q.initialized)} == {j for i, j in u if i == e}, (k, e)


def test_one_shot_rules_are_checked():
    with pytest.raises(BadInput, match="rule must be one of"):
        OneShotConfig(rule="sampled")


@pytest.mark.parametrize("space", ["mobile", "basic"])
def test_a_width_path_is_the_subnet_that_inherits_it(space, tiny_data):
    """The one-shot supernet on a path with narrower widths computes what the fixed network of
    that path computes with the inherited (leading-slice) weights: 0 difference, same quantizers."""
    from qnas_deploy.search.inherit import inherit_from
    from qnas_deploy.spaces import build_model
    from qnas_deploy.spec import ArchSpec, LayerSpec

    widths = (16, 24) if space == "mobile" else (12, 24)
    cfg = OneShotConfig(space=space, channels=8 if space == "mobile" else 12, blocks=1, widths=widths, bits=(4, 8))
    net = build_supernet(cfg)
    net.train()
    for seed in range(3):
        sample_path(net, np.random.default_rng([9, seed]))
        x = torch.rand(2, 3, 10, 12)
        net(x)  # initialise every chosen quantizer, ranges included, on this path
        net.eval()
        layers, t = [], net.template
        for key, m in net.mixed.items():
            i, j = m.path[:2]
            w = m.widths[m.path[2]] if m.widths else None
            layers.append(LayerSpec(m.slot.name, m.ops[i], m.bits[j], m.bits[j], w))
        spec = ArchSpec(space=space, scale=4, channels=t.channels, blocks=t.blocks, layers=tuple(layers),
                        adq=t.adq, anchor=t.anchor)
        model = build_model(spec)
        model(x)  # marks its quantizers initialised, then overwritten by the inherited state
        inherit_from(model, spec, net)
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x), net(x)), seed
        net.train()


def test_width_search_writes_version_2_found_json_that_exports_exactly(tiny_data, tmp_path, capsys):
    out = tmp_path / "found.json"
    assert _search("random", tiny_data, out, "--widths", "8,16") == 0
    spec = load(out)
    r = json.loads((tmp_path / "found.trials.json").read_text())
    assert any(k.endswith(".width") for t in r["trials"] for k in t["params"])
    assert spec.to_dict()["version"] == 2
    ck = r["best"]["checkpoint"]
    onnx = tmp_path / "m.onnx"
    assert main(["export", ck, "-o", str(onnx)]) == 0
    js = tmp_path / "p.json"
    assert main(["bench", "parity", ck, str(onnx), "--data", str(tiny_data), "--json", str(js),
                 "--tolerance-db", "100"]) == 0
    e = json.loads(js.read_text())["files"]
    assert all(v["max_abs_diff"] == 0 for k, v in e.items() if k not in ("pytorch", "reference"))
    assert main(["search", "--space", "mobile", "--widths", "all", "--quick", "-o", str(tmp_path / "d.json")]) == 2
    assert "DNAS searches the space's fixed widths" in capsys.readouterr().err
    assert _search("random", tiny_data, tmp_path / "e.json", "--widths", "12") == 2
    assert "multiple of 8" in capsys.readouterr().err


def test_live_latency_is_measured_per_candidate_and_bounds_the_result(tiny_data, tmp_path, capsys):
    """--latency-live: every trial's cost is its file timed in onnxruntime (ms, kept for a
    resume), the budget is a constraint on those measurements, and found.json says so."""
    out = tmp_path / "found.json"
    assert _search("random", tiny_data, out, "--latency-live", "onnxruntime", "--latency-size", "16x16",
                   "--widths", "8,16") == 0
    r = json.loads((tmp_path / "found.trials.json").read_text())
    measured = json.loads((tmp_path / "found.live" / "latency.json").read_text())
    assert r["cost_unit"] == "ms" and "measured: onnxruntime on this machine, 16x16" in r["cost_source"]
    assert sorted(measured.values()) == sorted({t["cost"] for t in r["trials"]})  # one timing per architecture
    assert all(0 < v < 1000 for v in measured.values())
    budget = sorted(t["cost"] for t in r["trials"])[1]
    out2 = tmp_path / "b" / "found.json"
    out2.parent.mkdir()
    assert _search("random", tiny_data, out2, "--latency-live", "onnxruntime", "--latency-size", "16x16",
                   "--widths", "8,16", "--latency-budget", str(budget * 1.5)) == 0
    assert load(out2).search["cost"] <= budget * 1.5 and load(out2).search["cost_unit"] == "ms"
    capsys.readouterr()
    assert _search("random", tiny_data, tmp_path / "c.json", "--latency-live", "tensorrt") == 2
    assert "--latency-live must be one of" in capsys.readouterr().err
    assert _search("dnas", tiny_data, tmp_path / "d.json", "--latency-live", "onnxruntime") == 2


@pytest.mark.parametrize("estimate", ["train", "finetune", "recalibrate"])
def test_each_estimate_scores_the_trials_and_needs_a_supernet_only_to_inherit(estimate, tiny_data, tmp_path, capsys):
    out = tmp_path / "found.json"
    steps = [] if estimate == "recalibrate" else ["--estimate-iters", "2"]
    assert _search("random", tiny_data, out, "--estimate", estimate, *steps) == 0
    r = json.loads((tmp_path / "found.trials.json").read_text())
    est = r["config"]["estimate"]
    assert est["iters"] == (0 if estimate == "recalibrate" else 2)
    assert est["start"] == ("initialised" if estimate == "train" else "inherited")
    assert (tmp_path / "found.oneshot.pt").is_file() == (estimate != "train")
    assert len(r["trials"]) == 4 and load(out).search["strategy"] == "random"


def test_estimates_are_checked():
    from qnas_deploy.search.oneshot import Finetune, estimator

    with pytest.raises(BadInput, match="trains nothing"):
        estimator("recalibrate", 5)
    with pytest.raises(BadInput, match="--estimate must be one of"):
        estimator("guess")
    with pytest.raises(BadInput, match="needs fine-tune steps"):
        Finetune(start="initialised")
    assert estimator("train", 7, 4, 16) == Finetune(iters=7, lr=2e-3, batch=4, patch=16, start="initialised")
