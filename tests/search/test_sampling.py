"""Sampling search on Optuna with the one-shot supernet: every strategy on tiny images."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("optuna")

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


def test_one_shot_training_trains_the_sampled_path_only(tiny_data):
    from qnas_deploy.data import training_pairs

    cfg = OneShotConfig(space="mobile", channels=8, blocks=1, iters=1, batch=2, patch=8)
    net = build_supernet(cfg)  # the same seeded initial weights train_oneshot starts from
    sample_path(net, np.random.default_rng([cfg.seed, 0]))
    paths = {k: m.path for k, m in net.mixed.items()}
    trained = train_oneshot(cfg, training_pairs(tiny_data, 4), tiny_data.parent / "os.pt", progress=False,
                            log=lambda m: None)
    for k, (i, j) in paths.items():
        for e, edge in enumerate(trained.mixed[k].edges):
            moved = not torch.equal(net.mixed[k].edges[e].convs[0].weight, edge.convs[0].weight)
            assert moved == (e == i), (k, e)
        steps = trained.mixed[k].edges[i].convs[0].weight_q
        assert bool(steps[j].initialized) and not any(bool(q.initialized) for b, q in enumerate(steps) if b != j)
