"""The Basic space with its tail at LR (``basic_lrtail``): what it promises beside ``basic``.

Its exactness in every runtime is covered with the zoo (``basic_lrtail_bicubic``) by the
exporter tests, which run every zoo entry.
"""
import dataclasses

import numpy as np
import pytest
import torch

from qnas_deploy import zoo
from qnas_deploy.anchor import Anchor
from qnas_deploy.cost.bitops import layer_costs
from qnas_deploy.exporters.builder import lower_model
from qnas_deploy.search import SearchConfig, search
from qnas_deploy.spaces import build_model


def _pair():
    lr = zoo.load_zoo("basic_lrtail_bicubic")
    return dataclasses.replace(lr, space="basic", name="hr"), lr


def test_same_layers_and_tail_macs_as_the_hr_tail():
    """The same searchable layers; the tail's MACs equal the HR tail's (3 C k^2 per HR pixel is
    3 s^2 C k^2 per LR pixel): moving it to LR buys SIMD lanes, not fewer operations."""
    hr, lr = _pair()
    assert [l.name for l in hr.layers] == [l.name for l in lr.layers]
    cost_hr = {c.name: c.macs for c in layer_costs(hr, (16, 16)).layers}
    cost_lr = {c.name: c.macs for c in layer_costs(lr, (16, 16)).layers}
    for name in cost_hr:
        if not name.startswith("anchor"):  # the LR anchor is one dense 3 -> 3 s^2 conv (as in the mobile space)
            assert cost_hr[name] == cost_lr[name], name


def test_every_conv_runs_at_lr():
    hr, lr = _pair()
    model = build_model(lr).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16))
    g = lower_model(model)
    d2s = [n for n in g.nodes if n.op == "depth_to_space"]
    assert len(d2s) == 1 and d2s[0].output == g.output and d2s[0].attrs.mode == "DCR"


def test_zeroed_tail_and_upsample_leave_the_bicubic_anchor():
    _, lr = _pair()
    spec = lr.with_(layers=tuple(l.__class__(l.name, l.op, 32, 32) for l in lr.layers), adq=False)
    model = build_model(spec).eval()
    x = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        for key in ("upsample", "tail_1"):
            for p in model.layers[key].parameters():
                p.zero_()
        y = model(x)
    assert torch.allclose(y, Anchor("bicubic", 4, tensor_bits=32)(x, 1.0), atol=1e-5)


@pytest.mark.parametrize("anchor", ["none", "nearest"])
def test_other_anchors_build_and_export_exactly(anchor, tmp_path):
    import onnx

    from qnas_deploy.exporters import reference
    from qnas_deploy.exporters.onnx import to_onnx
    from qnas_deploy.runtimes.onnxruntime import session

    _, lr = _pair()
    model = build_model(dataclasses.replace(lr, anchor=anchor)).eval()
    with torch.no_grad():
        model(torch.rand(2, 3, 16, 16))
    from qnas_deploy.exporters import targets
    from qnas_deploy.exporters.options import ExportOptions

    g = targets.get("onnxruntime").lower(lower_model(model), ExportOptions())
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 9, 11), dtype=np.uint8)
    onnx.save(to_onnx(g), tmp_path / "m.onnx")
    out = session(tmp_path / "m.onnx", threads=1).run(None, {"input": x})[0]
    assert out.shape == (1, 3, 36, 44)
    assert np.array_equal(out, reference.run(g, x, "onnxruntime"))


def test_dnas_search_on_basic_lrtail(tmp_path, sr_folder):
    from qnas_deploy.data import training_pairs

    cfg = SearchConfig(space="basic_lrtail", epochs=2, iters=2, batch=2, patch=8, channels=6, blocks=1,
                       lr=1e-2, alpha_lr=3e-2, anchor="bicubic")
    r = search(cfg, training_pairs(sr_folder(tmp_path / "imgs", n=2) / "HR", 4), tmp_path / "found.json", progress=False, log=lambda m: None)
    assert r.spec.space == "basic_lrtail" and r.spec.anchor == "bicubic"
    assert [l.name for l in r.spec.layers][-2:] == ["tail.0", "tail.1"]
