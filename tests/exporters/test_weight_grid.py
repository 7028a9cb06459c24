"""The 7-bit weight grid (``weight_grid: "7bit"``): 8-bit weights on [-64, 63], which keep
onnxruntime's x86 uint8 x int8 kernel from saturating, so they stay in it (no uint8-stored
fallback), and run exactly in every backend.

Tolerance: 0 steps of the uint8 output against the reference in each runtime's arithmetic.
The weight steps are cut to an eighth once set, so that the weights sit on the grid's
ends (clipped there), as trained weights do where the full grid would saturate, while the
activations keep their ranges.
"""
import numpy as np
import pytest
import torch

from qnas_deploy.calibrate import calibrate
from qnas_deploy.checkpoint import load_checkpoint, save_checkpoint
from qnas_deploy.cli import main
from qnas_deploy.errors import SpecError
from qnas_deploy.exporters import reference, targets
from qnas_deploy.exporters.export import export
from qnas_deploy.ops import QConv2d
from qnas_deploy.quant import LSQWeightPerChannel
from qnas_deploy.runtimes import RUNTIMES
from qnas_deploy.spaces import build_model
from qnas_deploy.spec import from_dict
from qnas_deploy.zoo import load_zoo

ENTRIES = ["espcn_w8a8", "mobile_w8a8", "basic_mixed"]


def _wide_checkpoint(path, name, grid):
    spec = load_zoo(name).with_(weight_grid=grid)
    torch.manual_seed(0)
    m = build_model(spec)
    g = torch.Generator().manual_seed(1)
    batches = [torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(24, 24), mode="bilinear")
               for _ in range(2)]
    m(batches[0])  # the steps are set from the weights on the first call
    with torch.no_grad():
        for conv in m.modules():
            if isinstance(conv, QConv2d) and isinstance(conv.weight, torch.nn.Parameter) and conv.w_bits == 8:
                conv.weight_quant.step.div_(8)
    calibrate(m, batches)
    save_checkpoint(path, spec, m.eval(), calibrated=True)
    return path


def _image():
    return np.random.default_rng(3).integers(0, 256, (1, 3, 19, 23), dtype=np.uint8)


@pytest.mark.parametrize("name", ENTRIES)
def test_7bit_grid_keeps_wide_weights_in_the_fast_kernel_and_exact(tmp_path, name):
    ck = _wide_checkpoint(tmp_path / "m.pt", name, "7bit")
    e = export(str(ck), str(tmp_path / "m.onnx"), log=lambda m: None)
    # Depthwise convs (ADQ's folded BN) add no pairs of products: nothing to saturate.
    eight = [n for n in e.lowered.nodes if n.op == "conv" and n.attrs.groups == 1
             and np.abs(n.attrs.weight.astype(int)).max() > 8]
    assert eight, "no 8-bit conv"
    ws = np.concatenate([n.attrs.weight.ravel().astype(int) for n in eight])
    assert ws.min() == -64 and ws.max() == 63  # on the grid's ends, and not past them
    assert all(n.attrs.storage == "int8" for n in e.lowered.nodes if n.op == "conv")
    assert e.options["weight_grid"] == "7bit"
    x = _image()
    hwc = x[0].transpose(1, 2, 0)
    files = {"onnxruntime": e,
             "openvino": export(str(ck), str(tmp_path / "ov.onnx"), target="openvino", log=lambda m: None),
             "litert-xnnpack": export(str(ck), str(tmp_path / "m.tflite"), fmt="tflite", log=lambda m: None)}
    files["litert-builtin"] = files["litert-xnnpack"]
    for rt, f in files.items():
        y = RUNTIMES[rt].image_runner(f.path, threads=1)(hwc).transpose(2, 0, 1)[None]
        assert np.array_equal(y, reference.run(f.lowered, x, targets.get(rt).arithmetic)), rt


def test_full_grid_takes_the_slow_uint8_form(tmp_path):
    """The same wide weights on the full grid pass +-64: the exporter stores them as
    uint8 (exact, slower), and says how to avoid it."""
    ck = _wide_checkpoint(tmp_path / "m.pt", "espcn_w8a8", "full")
    said = []
    e = export(str(ck), str(tmp_path / "m.onnx"), log=said.append)
    assert any(n.op == "conv" and n.attrs.storage == "uint8" for n in e.lowered.nodes)
    assert any("--for-target onnxruntime" in line for line in said)


def test_narrowing_keeps_sub_8_bit_and_fixed_grids_sound():
    q8, q4 = LSQWeightPerChannel(8, 2), LSQWeightPerChannel(4, 2)
    for q in (q8, q4):
        q.narrow_to_7bit()
    assert (q8.qmin, q8.qmax) == (-64, 63) and (q4.qmin, q4.qmax) == (-8, 7)
    w = torch.randn(2, 3, 3, 3) * 10
    q8.init_from(w)
    assert q8.integer_weight(w).abs().max() <= 64
    # The bicubic anchor's fixed grid keeps its range on fewer levels.
    spec = load_zoo("mobile_w8a8")
    full, narrow = build_model(spec), build_model(spec.with_(weight_grid="7bit"))
    fq, nq = full.anchor.conv.weight_quant, narrow.anchor.conv.weight_quant
    assert torch.allclose(nq.step * nq.qmax, fq.step * fq.qmax)
    assert nq.integer_weight(narrow.anchor.conv.weight).abs().max() == 63


def test_found_json_records_the_grid():
    d = load_zoo("espcn_w8a8").to_dict()
    assert "weight_grid" not in d  # absent: the full grid, as every document before it
    assert from_dict(dict(d, weight_grid="7bit")).to_dict()["weight_grid"] == "7bit"
    with pytest.raises(SpecError, match="weight_grid") as e:
        from_dict(dict(d, weight_grid="6bit"))
    assert "\n" not in str(e.value)


def test_train_for_target_records_the_grid(tmp_path, sr_folder):
    data = sr_folder(tmp_path / "data", n=2, size=32)
    out = tmp_path / "m.pt"
    assert main(["train", "espcn_w8a8", "--data", str(data), "-o", str(out), "--epochs", "1", "--iters", "2",
                 "--batch", "2", "--patch", "8", "--calib-batches", "1", "--for-target", "onnxruntime",
                 "--no-progress"]) == 0
    ck = load_checkpoint(out)
    assert ck.spec.weight_grid == "7bit"
    qs = [m for m in ck.model.modules() if isinstance(m, LSQWeightPerChannel) and m.bits == 8]
    assert qs and all((q.qmin, q.qmax) == (-64, 63) for q in qs)
    assert main(["train", "espcn_w8a8", "--data", str(data), "-o", str(tmp_path / "n.pt"), "--for-target",
                 "tensorrt"]) == 2
