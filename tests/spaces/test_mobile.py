"""The mobile space: every conv at LR, the anchor added at LR in DCR order, one depth-to-space.

Its exactness in every runtime is covered with the zoo (``mobile_w8a8``, ``mobile_mixed``) by
the exporter tests, which run every zoo entry; here: what the space itself promises.
"""
import json

import numpy as np
import pytest
import torch

from qnas_deploy import spec as S
from qnas_deploy import zoo
from qnas_deploy.anchor import Anchor, dcr_depth_to_space
from qnas_deploy.errors import SpecError
from qnas_deploy.exporters.builder import lower_model
from qnas_deploy.search import SearchConfig, search
from qnas_deploy.spaces import build_model


@pytest.mark.parametrize("mode", ["nearest", "bicubic"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_anchor_then_dcr_is_the_hr_anchor(mode, scale):
    """The LR anchor (DCR order) followed by DCR depth-to-space is the HR anchor, in float."""
    x = torch.rand(2, 3, 7, 9)
    hr = Anchor(mode, scale, tensor_bits=32)(x, 1.0)
    lr = Anchor(mode, scale, tensor_bits=32, at_lr=True)(x, 1.0)
    assert lr.shape == (2, 3 * scale * scale, 7, 9)
    assert torch.allclose(dcr_depth_to_space(lr, scale), hr, atol=1e-6)


def test_dcr_depth_to_space_is_onnx_dcr():
    """ONNX's DepthToSpace (mode DCR) definition, written out in numpy."""
    x = torch.arange(2 * 12 * 2 * 3, dtype=torch.float32).reshape(2, 12, 2, 3)
    b, c, h, w, s = 2, 3, 2, 3, 2
    ref = x.numpy().reshape(b, s, s, c, h, w).transpose(0, 3, 4, 1, 5, 2).reshape(b, c, h * s, w * s)
    assert np.array_equal(dcr_depth_to_space(x, s).numpy(), ref)


def test_zeroed_upsample_leaves_the_bicubic_anchor():
    spec = zoo.load_zoo("mobile_w8a8")
    assert spec.anchor == "bicubic"
    spec = spec.with_(layers=tuple(l.__class__(l.name, l.op, 32, 32) for l in spec.layers))
    model = build_model(spec).eval()
    x = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        for p in model.layers["upsample"].parameters():
            p.zero_()
        y = model(x)
    assert torch.allclose(y, Anchor("bicubic", 4, tensor_bits=32)(x, 1.0), atol=1e-5)


def test_every_conv_runs_at_lr():
    """Nothing at HR but the last depth-to-space: every conv reads and writes LR tensors."""
    for name in ("mobile_w8a8", "mobile_mixed"):
        model = build_model(zoo.load_zoo(name)).eval()
        with torch.no_grad():
            model(torch.rand(1, 3, 16, 16))  # calibrate the ranges once
        g = lower_model(model)
        assert [n.op for n in g.nodes].count("depth_to_space") == 1
        d2s = next(n for n in g.nodes if n.op == "depth_to_space")
        assert d2s.output == g.output and d2s.attrs.mode == "DCR"
        assert all(n.op != "conv" or n.output != g.output for n in g.nodes)


@pytest.mark.parametrize("channels, needle", [(36, "a multiple of 8"), (20, "a multiple of 8")])
def test_channels_fill_simd_lanes(channels, needle):
    with pytest.raises(SpecError, match=needle) as e:
        S.uniform("mobile", "simple_3x3", 8, channels=channels)
    assert "\n" not in str(e.value)


def test_op_sets_hold_xlsr_grouped_convs():
    from qnas_deploy.spaces import get_space

    sp = get_space("mobile")
    assert "simple_3x3_grouped_4" in sp.ops_for("body") and sp.anchors == ("none", "nearest", "bicubic")


def _images(folder):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6), size=(48, 48), mode="bilinear")
        arr = (smooth[0].permute(1, 2, 0).numpy() * 200 + rng.integers(0, 40, (48, 48, 3))).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"im{i}.png")
    from qnas_deploy.data import training_pairs

    return training_pairs(folder, 4)


TINY = dict(space="mobile", epochs=3, iters=2, batch=2, patch=8, channels=8, blocks=2, lr=1e-2, alpha_lr=3e-2,
            entropy=1e-2, anchor="bicubic")


def test_dnas_search_on_the_mobile_space_exports_exactly(tmp_path):
    """DNAS (BitOps penalty) on the mobile space writes a found.json that exports exactly."""
    from qnas_deploy.exporters import reference
    from qnas_deploy.exporters.export import export
    from qnas_deploy.runtimes.onnxruntime import session

    out = tmp_path / "found.json"
    r = search(SearchConfig(**TINY), _images(tmp_path / "imgs"), out, progress=False, log=lambda m: None)
    spec = S.load(out)
    assert spec.space == "mobile" and spec.anchor == "bicubic" and len(r.history) == 3
    assert {l.name for l in spec.layers} == {"head.0", "body.0", "body.1", "upsample"}
    e = export(str(out), str(tmp_path / "m.onnx"), log=lambda m: None)
    x = np.random.default_rng(1).integers(0, 256, (1, 3, 11, 13), dtype=np.uint8)
    assert np.array_equal(session(e.path, threads=1).run(None, {"input": x})[0],
                          reference.run(e.lowered, x, "onnxruntime"))


def test_latency_table_steers_the_mobile_search(tmp_path, latency_table):
    """The latency-table penalty on the mobile space: a table where every 4-bit layer is
    100x slower than its 8-bit twin turns the search to 8 bits."""
    path = tmp_path / "table.json"
    path.write_text(json.dumps(latency_table(space="mobile", channels=8, blocks=2,
                                             ms=lambda op, b, name, backend: 100.0 if b == 4 else 1.0)))
    cfg = SearchConfig(**{**TINY, "penalty": 10.0, "entropy": 0.0}, latency_table=str(path))
    r = search(cfg, _images(tmp_path / "imgs"), tmp_path / "found.json", progress=False, log=lambda m: None)
    assert {l.w_bits for l in r.spec.layers} == {8}
