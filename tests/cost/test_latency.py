"""The latency cost model: a per-layer table's keys, sums, predictions, fit, search costs and loading."""
import json
import subprocess
import sys

import pytest
import torch

from qnas_deploy.cost.latency import evaluate, fit_fixed, key, layers_ms, load, predict, search_costs
from qnas_deploy.errors import BadInput
from qnas_deploy.spaces import get_space
from qnas_deploy.spec import LayerSpec, uniform

OPS = {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1", "upsample": "simple_3x3", "tail": "simple_3x3"}


def _slow_upsample(op, b, name, backend):
    """1 ms per layer, but the upsample layer's 5x5 (the only 6->48 slot) costs 10 ms at 8
    bits, and onnxruntime takes twice litert's time."""
    base = 10.0 if (name, op, b) == ("upsample", "simple_5x5", 8) else 1.0
    return base * (2 if backend == "onnxruntime" else 1)


def _one_line(e) -> bool:
    return "\n" not in str(e.value) and str(e.value)


def _layers(spec):
    return [(l.name, l.op, l.w_bits, l.a_bits) for l in spec.layers]


def _with_op(spec, name, op):
    return spec.with_(layers=tuple(LayerSpec(l.name, op, l.w_bits, l.a_bits) if l.name == name else l
                                   for l in spec.layers))


def test_key_names_every_dimension_in_order():
    assert key("simple_3x3", 4, 8, 3, 36, 20, 24) == "simple_3x3|w4a8|3->36|20x24"
    keys = {key("simple_3x3", 4, 8, 3, 36, 20, 24), key("simple_3x3", 8, 4, 3, 36, 20, 24),
            key("simple_3x3", 4, 8, 36, 3, 20, 24), key("simple_3x3", 4, 8, 3, 36, 24, 20)}
    assert len(keys) == 4  # weight/activation bits, channels and sides are not interchangeable


def test_layers_ms_sums_the_entries_of_the_layers(latency_table):
    table = latency_table(bits=(8,), ms=_slow_upsample, backends=("onnxruntime", "litert-xnnpack"))
    spec = uniform("basic", OPS, 8, channels=6, blocks=1)
    n = len(spec.layers)
    assert layers_ms(table, _layers(spec), "onnxruntime") == 2.0 * n
    slow = _layers(_with_op(spec, "upsample", "simple_5x5"))
    assert layers_ms(table, slow, "onnxruntime") == 2.0 * (n - 1) + 20.0
    assert layers_ms(table, slow, "litert-xnnpack") == 1.0 * (n - 1) + 10.0
    assert layers_ms(table, slow[:1], "onnxruntime") == 2.0
    assert layers_ms(table, [], "onnxruntime") == 0.0


def test_layers_ms_refuses_an_unknown_layer_or_unmeasured_bits(latency_table):
    table = latency_table(bits=(8,))
    with pytest.raises(BadInput, match="no layer 'body.9.0'") as e:
        layers_ms(table, [("body.9.0", "simple_3x3", 8, 8)], "onnxruntime")
    assert _one_line(e)
    with pytest.raises(BadInput, match=r"no entry simple_3x3\|w4a4.*measured bits: \[8\]") as e:
        layers_ms(table, [("head.1", "simple_3x3", 4, 4)], "onnxruntime")
    assert _one_line(e)


def test_predict_is_the_fixed_part_plus_the_layers(latency_table):
    table = latency_table(bits=(8,), ms=_slow_upsample, backends=("onnxruntime", "litert-xnnpack"), fixed_ms=3.5)
    table["fixed_ms"]["litert-xnnpack"] = 0.25
    spec = uniform("basic", OPS, 8, channels=6, blocks=1)
    n = len(spec.layers)
    assert predict(table, spec, "onnxruntime") == 3.5 + 2.0 * n
    assert predict(table, spec, "litert-xnnpack") == 0.25 + 1.0 * n
    assert predict(table, _with_op(spec, "upsample", "simple_5x5"), "litert-xnnpack") == 0.25 + (n - 1) + 10.0


def test_predict_refuses_another_space_and_an_uncalibrated_table(latency_table):
    spec = uniform("basic", OPS, 8, channels=6, blocks=1)
    with pytest.raises(BadInput, match="has no fixed part for onnxruntime") as e:
        predict(latency_table(bits=(8,)), spec, "onnxruntime")
    assert _one_line(e)
    other = latency_table(bits=(8,), fixed_ms=1.0)
    other["space"] = "rfdn"
    with pytest.raises(BadInput, match="for the 'rfdn' space, the spec is 'basic'") as e:
        predict(other, spec, "onnxruntime")
    assert _one_line(e)


def test_fit_fixed_takes_the_median_residual_per_backend(latency_table):
    table = latency_table(bits=(8,), backends=("onnxruntime", "litert-xnnpack"))
    layers = _layers(uniform("basic", OPS, 8, channels=6, blocks=1))
    summed = float(len(layers))
    # Residuals 1, 2 and 30 ms (onnxruntime), 4, 5, 6 (litert): medians 2 and 5, means 11 and 5.
    rows = [{"layers": layers, "onnxruntime_ms": summed + r_o, "litert-xnnpack_ms": summed + r_l}
            for r_o, r_l in ((30.0, 4.0), (1.0, 6.0), (2.0, 5.0))]
    fit_fixed(table, rows)
    assert table["fixed_ms"] == {"onnxruntime": pytest.approx(2.0), "litert-xnnpack": pytest.approx(5.0)}


def test_evaluate_scores_the_predictions_and_records_them(latency_table):
    table = latency_table(bits=(8,), ms=lambda op, b, name, be: {"simple_5x5": 3.0, "conv_3x1_1x3": 7.0}.get(op, 1.0),
                          fixed_ms=1.0)
    base = uniform("basic", OPS, 8, channels=6, blocks=1)
    specs = [base, _with_op(base, "body.0.0", "simple_5x5"), _with_op(base, "body.0.0", "conv_3x1_1x3")]
    predicted = [predict(table, s, "onnxruntime") for s in specs]
    assert len(set(predicted)) == 3
    rows = [{"layers": _layers(s), "onnxruntime_ms": 1.25 * p} for s, p in zip(specs, predicted)]
    acc = evaluate(table, rows)["onnxruntime"]
    assert acc["kendall_tau"] == pytest.approx(1.0) and acc["pearson_r"] == pytest.approx(1.0)
    assert acc["mape"] == pytest.approx(0.25 / 1.25)
    assert [r["onnxruntime_predicted_ms"] for r in rows] == pytest.approx(predicted)


def _search_slots(channels=6, blocks=1):
    sp = get_space("basic")
    slots = sp.layout(channels, blocks, 4)
    return slots, [sp.ops_for(s.role, "small") for s in slots]


def test_search_costs_are_one_ops_by_bits_matrix_per_layer(latency_table):
    def ms(op, b, name, backend):  # distinct per operation, bits and the one 6->48 slot
        return sum(map(ord, op)) + b / 100 + (1000 if name == "upsample" else 0)

    table = latency_table(bits=(4, 8), ms=ms)
    slots, ops = _search_slots()
    costs = search_costs(table, slots, ops, (4, 8), "onnxruntime")
    assert len(costs) == len(slots)
    for slot, layer_ops, c in zip(slots, ops, costs):
        assert c.shape == (len(layer_ops), 2) and c.dtype == torch.float64
        want = torch.tensor([[ms(op, b, slot.name, "") for b in (4, 8)] for op in layer_ops], dtype=torch.float64)
        assert torch.allclose(c, want, rtol=0, atol=1e-9)
    # the bits' order is the caller's: columns follow it
    flipped = search_costs(table, slots, ops, (8, 4), "onnxruntime")
    assert torch.equal(flipped[0], costs[0].flip(1))


def test_search_costs_refuse_a_table_that_does_not_match_in_one_line(latency_table):
    slots, ops = _search_slots()
    table = latency_table(bits=(4, 8), backends=("onnxruntime", "litert-xnnpack"))
    cases = [(table, slots, "litert_builtin", "no litert_builtin timings \\(it has onnxruntime, litert-xnnpack\\)"),
             (latency_table(bits=(4, 8), channels=12), slots, "onnxruntime", "measured for head.0 with 3->12 channels"),
             (table, _search_slots(blocks=2)[0], "onnxruntime", "no layer 'body.1.0'")]
    for tab, sl, backend, needle in cases:
        with pytest.raises(BadInput, match=needle) as e:
            search_costs(tab, sl, [get_space("basic").ops_for(s.role, "small") for s in sl], (4, 8), backend)
        assert _one_line(e)
    with pytest.raises(BadInput, match="no entry .*w2a2") as e:
        search_costs(table, slots, ops, (2, 8), "onnxruntime")
    assert _one_line(e)


def test_load_reads_a_table_and_rejects_other_files(latency_table, tmp_path):
    good = tmp_path / "table.json"
    good.write_text(json.dumps(latency_table()))
    assert load(good) == latency_table()
    cases = {"other.json": ('{"format": "something else"}', "not a qnas-deploy latency table"),
             "list.json": ("[1, 2]", "not a qnas-deploy latency table"),
             "broken.json": ("{not json", "cannot read a latency table"),
             "missing.json": (None, "cannot read a latency table")}
    for name, (text, needle) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(BadInput, match=needle) as e:
            load(path)
        assert _one_line(e) and name in str(e.value)


def test_the_latency_model_imports_without_pytorch(latency_table, tmp_path):
    """A board that reads a table has no PyTorch: the model, and the package it sits in, load without it."""
    table = latency_table(bits=(8,), fixed_ms=2.0)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    layers = _layers(uniform("basic", OPS, 8, channels=6, blocks=1))
    code = ("import sys, types; sys.modules['torch'] = None\n"
            "from qnas_deploy.cost.latency import load, predict\n"
            "layer = lambda n, o, w, a: types.SimpleNamespace(name=n, op=o, w_bits=w, a_bits=a)\n"
            f"spec = types.SimpleNamespace(space='basic', layers=[layer(*l) for l in {layers!r}])\n"
            f"print(predict(load({str(path)!r}), spec, 'onnxruntime'))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert float(out) == 2.0 + len(layers)


def test_a_table_predicts_only_the_anchor_its_fixed_part_was_fitted_with(latency_table):
    from qnas_deploy.cost.latency import predict
    from qnas_deploy.errors import BadInput
    from qnas_deploy.spec import uniform

    table = latency_table(space="basic", channels=6, blocks=1, fixed_ms=2.0)
    spec = uniform("basic", {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1",
                             "upsample": "simple_3x3", "tail": "simple_3x3"}, 8, channels=6, blocks=1)
    assert predict(table, spec, "onnxruntime") == 2.0 + len(spec.layers)
    with pytest.raises(BadInput, match="anchor 'none', the spec has 'bicubic'"):
        predict(table, spec.with_(anchor="bicubic"), "onnxruntime")
    table["anchor"] = "bicubic"
    assert predict(table, spec.with_(anchor="bicubic"), "onnxruntime") == 2.0 + len(spec.layers)
