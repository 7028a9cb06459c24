"""Add and mul scales snapped at calibration: every runtime's int8 ADD and MUL equal the
exact ones on all 65536 input pairs of every quantized add and mul (0 pairs differ, checked
exhaustively)."""
import numpy as np
import pytest
import torch

from qnas_deploy.calibrate import calibrate
from qnas_deploy.exporters import add_scales
from qnas_deploy.exporters.builder import lower_model
from qnas_deploy.exporters.ir import Tensor
from qnas_deploy.spaces import build_model
from qnas_deploy.zoo import load_zoo

WITH_ADDS = ["rfdn_mixed", "basic_mixed", pytest.param("basic_lrtail_bicubic", marks=pytest.mark.slow), "mobile_w8a8"]


def _adds(model):
    """Every quantized add's and mul's mismatches (as the runtimes' kernels see its tensors,
    OpenVINO's in the form the openvino target's file computes it in)."""
    g = lower_model(model)
    forms = add_scales.openvino_forms(g)
    return {n.output: add_scales.mismatches(*(g.tensor(t) for t in (*n.inputs, n.output)), op=n.op,
                                           mult=n.attrs.mult, openvino_form=forms.get(n.output))
            for n in g.nodes if add_scales.quantized_elementwise(g, n)}


def _calibrated(name, exact_adds):
    torch.manual_seed(0)
    m = build_model(load_zoo(name))
    calibrate(m, [torch.rand(2, 3, 24, 24) for _ in range(2)], exact_adds=exact_adds)
    return m


def test_a_ratio_of_one_is_exact_and_a_generic_one_is_not():
    t = lambda name, s: Tensor(name, 1, s, 128, 0, 255)
    assert not any(add_scales.mismatches(t("a", 0.05), t("b", 0.05), t("c", 0.05)).values())
    # XNNPACK keeps 20 bits of each ratio: a generic triple rounds some pair otherwise.
    rng = np.random.default_rng(0)
    found = [add_scales.mismatches(t("a", float(a)), t("b", float(b)), t("c", float(c)))["litert-xnnpack"]
             for a, b, c in rng.uniform(0.01, 0.1, (20, 3)).astype(np.float32)]
    assert max(found) > 0


@pytest.mark.parametrize("form", ["fma", "apart", "chained"])
def test_openvino_rewritten_add_rounds_some_pairs_otherwise(form):
    # LPT's s2 ((x1 - z1') s1 / s2 + x2) in float32 rounds near-ties of the exact add the
    # other way on a few of the 65536 pairs of a generic triple of scales; a ratio of one is exact.
    t = lambda name, s, z=128: Tensor(name, 1, s, z, 0, 255)  # noqa: E731
    assert not add_scales.mismatches(t("a", 0.05), t("b", 0.05), t("c", 0.05), openvino_form=(0, form))["openvino"]
    rng = np.random.default_rng(1)
    found = [add_scales.mismatches(t("a", float(a), 120), t("b", float(b), 131), t("c", float(c)),
                                   openvino_form=(1, form))["openvino"]
             for a, b, c in rng.uniform(0.01, 0.1, (40, 3)).astype(np.float32)]
    assert max(found) > 0


def test_openvino_forms_are_read_from_the_openvino_file():
    # Keyed by the canonical graph's adds, read in the openvino target's file (where a copy
    # stands between each conv and its add: conv_add_copy).
    g = lower_model(_calibrated("rfdn_mixed", exact_adds=False))
    forms = add_scales.openvino_forms(g)
    adds = {n.output for n in g.nodes if n.op == "add" and add_scales.quantized_elementwise(g, n)}
    muls = {n.output for n in g.nodes if n.op == "mul"}
    assert forms.keys() == adds | muls and {forms[a][1] for a in adds} <= {"fma", "apart", "chained"}
    assert all(forms[m] == (False, True) for m in muls)  # ESA's x * sigmoid(m)


@pytest.mark.parametrize("name", WITH_ADDS)
def test_calibration_makes_every_add_exact_in_every_kernel(name):
    before = _adds(_calibrated(name, exact_adds=False))
    model = _calibrated(name, exact_adds=True)
    after = _adds(model)
    assert before.keys() == after.keys() and after
    # every kernel of every add, OpenVINO's included; every mul's but the builtin MUL's, which
    # no scale near an initialised ESA mul's makes exact with OpenVINO's (add_scales' docstring)
    muls = {n.output for n in lower_model(model).nodes if n.op == "mul"}
    off = {k: v for k, v in after.items() if any(c for kernel, c in v.items() if k not in muls or kernel != "litert-builtin")}
    assert not off, off
    if name == "rfdn_mixed":  # 22 adds: without the snap, some differ (the test can fail)
        assert any(any(v.values()) for v in before.values())


def test_the_snap_moves_add_scales_by_parts_per_million_and_mul_outputs_by_percents():
    plain, snapped = _calibrated("rfdn_mixed", False), _calibrated("rfdn_mixed", True)
    a = dict(plain.named_buffers())
    rel = [float(b) / float(a[k]) - 1 for k, b in snapped.named_buffers() if k.endswith("absmax")]
    muls = [r for r in rel if abs(r) > 1e-4]  # one range per ESA mul (RFDN has 4), which only grows
    assert 1 <= len(muls) <= 4 and all(0 < r <= add_scales.MUL_WITHIN for r in muls)
    assert 0 < max(abs(r) for r in rel if abs(r) <= 1e-4)


def test_builtin_mul_rounds_twice_and_free_multipliers_avoid_every_window():
    """RFDN's ESA mul as trained (x: conv output, mask: sigmoid on 1/256 times its factor):
    the builtin MUL differs on a fraction of pairs near 2^-(s+1); every factor
    ``free_multipliers`` returns makes both MUL kernels exact on all pairs."""
    ta, tb = Tensor("a", 1, 0.050324901938438416, 128, 0, 255), Tensor("b", 1, 0.0010093882447108626, 0, 0, 255)
    tc = Tensor("c", 1, 0.01287126075476408, 128, 0, 255)
    before = add_scales.mismatches(ta, tb, tc, op="mul")
    assert before["litert-xnnpack"] == 0 and 0.002 < before["litert-builtin"] / 65536 < 0.008
    fs = add_scales.free_multipliers(ta, tb, tc)
    assert len(fs) >= 2 and abs(fs[0] - 1) <= add_scales.MUL_WITHIN
    assert list(np.abs(fs - 1)) == sorted(np.abs(fs - 1))
    for f in fs[:4]:
        moved = Tensor("c", 1, float(np.float32(tc.scale / f)), 128, 0, 255)
        assert not any(add_scales.mismatches(ta, tb, moved, op="mul").values()), f
    # and a ratio inside a window is not returned: the scan's exact points are all near one
    scan = [1 + k * 1e-3 for k in range(-50, 51)]
    exact = [f for f in scan if not add_scales.mismatches(ta, tb, Tensor("c", 1, float(np.float32(tc.scale / f)),
                                                                         128, 0, 255), op="mul")["litert-builtin"]]
    assert all(min(abs(fs - f)) < 2e-3 for f in exact)


def test_export_names_adds_a_checkpoint_left_inexact(tmp_path):
    """A checkpoint calibrated before the snap: the TFLite export says which adds and how
    to fix them; the snapped one exports without the hint."""
    from qnas_deploy.checkpoint import save_checkpoint
    from qnas_deploy.exporters.export import export

    for exact_adds, hinted in ((False, True), (True, False)):
        m = _calibrated("rfdn_mixed", exact_adds)
        ck = tmp_path / f"{exact_adds}.pt"
        save_checkpoint(ck, m.spec, m, calibrated=True)
        lines = []
        export(str(ck), tmp_path / f"{exact_adds}.tflite", "tflite", input_size=(24, 24), log=lines.append)
        assert any("--calib" in l and "add(s)" in l for l in lines) == hinted, lines


def test_an_esa_mul_can_be_exact_in_openvino_or_in_the_builtin_mul_not_both():
    """A briefly trained RFDN's ESA mul (block.0): its ratio sits in a builtin gap 1.3e-5 wide
    that starts just above the tie of product 88 (0.5 + 5.5e-6 steps); OpenVINO adds the zero
    point 128 before it rounds (ulp 2^-16) and rounds that as the tie. Every point of the gap
    exact in the builtin MUL is inexact in OpenVINO, and points above it exact in OpenVINO
    round a few pairs twice in the builtin MUL (what the snap then takes)."""
    ta, tb = Tensor("a", 1, 0.03389737010002136, 128, 0, 255), Tensor("b", 1, 0.00390625, 0, 0, 255)
    mult, form = 0.185869961977005, (False, True)

    def at(d):
        tc = Tensor("c", 1, float(np.float32(0.004331548232585192 / (1 + d))), 128, 0, 255)
        return add_scales.mismatches(ta, tb, tc, "mul", mult, form)
    gap = [at(d) for d in np.arange(-8e-6, 3e-6, 2e-6)]
    assert all(b["litert-builtin"] == 0 and b["openvino"] > 0 for b in gap)
    above = at(1e-5)
    assert above["openvino"] == 0 and 0 < above["litert-builtin"] <= add_scales.MUL_BUILTIN_PAIRS
    assert above["onnxruntime"] == above["litert-xnnpack"] == 0
