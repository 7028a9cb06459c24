"""Layer widths (found.json version 2): the Basic spaces' free layers exported exactly.

The mobile space's widths run through every runtime with the zoo (``mobile_widths``); the
Basic spaces have no width entry in the zoo, so one architecture of each with every free
layer at another width is exported here and run in onnxruntime and LiteRT (XNNPACK and
builtin) against the reference in each target's arithmetic: 0 steps.
"""
import numpy as np
import pytest
import torch

from qnas_deploy import spec as S
from qnas_deploy.exporters import reference
from qnas_deploy.exporters.builder import lower_model
from qnas_deploy.exporters.export import export, prepare
from qnas_deploy.runtimes import RUNTIMES
from qnas_deploy.spaces import get_space


def _widths_spec(space: str) -> S.ArchSpec:
    base = S.uniform(space, {"head": "simple_3x3", "body": "conv_3x1_1x3", "skip": "simple_1x1",
                             "upsample": "simple_3x3", "tail": "simple_3x3"}, 8, blocks=1, anchor="bicubic",
                     weight_grid="narrow")
    free = [s.name for s in get_space(space).slots_of(base) if s.free_width]
    choices = get_space(space).width_choices
    layers = tuple(S.LayerSpec(l.name, l.op, 8, 8, choices[free.index(l.name) % 2 * 2] if l.name in free else None)
                   for l in base.layers)
    return base.with_(layers=layers, name=f"{space}_widths")


@pytest.mark.parametrize("space", ["basic", "basic_lrtail"])
def test_free_widths_export_exactly(space, tmp_path):
    spec = _widths_spec(space)
    assert {l.width for l in spec.layers} == {24, 48, None}
    S.save(spec, tmp_path / "found.json")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 3, 19, 23), dtype=np.uint8)
    hwc = x[0].transpose(1, 2, 0)
    e = export(str(tmp_path / "found.json"), tmp_path / "m.onnx", log=lambda m: None)
    m = prepare(str(tmp_path / "found.json"), log=lambda m: None).model.eval()
    with torch.no_grad():  # the trained (fake-quant) network is what the graph computes
        y = torch.round(m(torch.from_numpy(x).float() / 255).clamp(0, 1) * 255).to(torch.uint8).numpy()
    assert np.array_equal(y, reference.run(lower_model(m), x))
    y = RUNTIMES["onnxruntime"].image_runner(e.path, threads=1)(hwc)
    assert np.array_equal(y.transpose(2, 0, 1)[None], reference.run(e.lowered, x, "onnxruntime"))
    for kernels in ("xnnpack", "builtin"):
        e = export(str(tmp_path / "found.json"), tmp_path / f"m_{kernels}.tflite", fmt="tflite",
                   target=f"litert-{kernels}", input_size=(19, 23), log=lambda m: None)
        y = RUNTIMES[f"litert-{kernels}"].image_runner(e.path, threads=1)(hwc)
        assert np.array_equal(y.transpose(2, 0, 1)[None], reference.run(e.lowered, x, f"litert-{kernels}")), kernels
