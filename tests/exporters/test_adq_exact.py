"""ADQ's BatchNorms snapped at calibration: the channels LiteRT's builtin depthwise kernels
would requantise otherwise than the exact map (checked on all 256 input levels) are moved,
by parts per ten thousand, until every LiteRT arithmetic computes them exactly."""
import copy
import functools

import numpy as np
import torch

from qnas_deploy.adq import ADQ
from qnas_deploy.calibrate import calibrate
from qnas_deploy.exporters import adq_exact
from qnas_deploy.exporters.builder import lower_model
from qnas_deploy.spaces import build_model
from qnas_deploy.zoo import load_zoo


@functools.lru_cache(maxsize=2)
def _calibrated(exact):
    torch.manual_seed(0)
    m = build_model(load_zoo("basic_lrtail_bicubic"))
    calibrate(m, [torch.rand(2, 3, 24, 24) for _ in range(2)], exact_adds=exact)
    return m


def _bad(model):
    g = lower_model(model)
    return {n.output: len(adq_exact.bad_channels(g, n)) for n in g.nodes if n.output.endswith(".bn")}


def test_calibration_makes_almost_every_batchnorm_channel_exact():
    plain, snapped = _calibrated(False), _calibrated(True)
    before, after = _bad(plain), _bad(snapped)
    assert len(before) == 3 and sum(before.values()) >= 30  # 2 roundings miss a level of many channels
    # a channel whose margin to a tie is below the kernels' first rounding stays (a few)
    assert sum(after.values()) <= sum(before.values()) // 8, (before, after)
    bns = lambda m: [a.bn for a in m.modules() if isinstance(a, ADQ)]  # noqa: E731
    for a, b in zip(bns(plain), bns(snapped)):
        rel = (b.weight / a.weight - 1).detach().abs().max()
        assert float(rel) <= adq_exact.MAX_STEPS * adq_exact.STEP + 1e-7
        unit = (b.bias - a.bias).detach().abs().max()
        assert float(unit) < 1e-2  # a few 127ths of an input step


def test_a_snapped_model_snaps_to_itself():
    m = copy.deepcopy(_calibrated(True))
    state = {k: v.clone() for k, v in m.state_dict().items()}
    assert adq_exact.snap(m) == []
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items())


def test_the_snap_changes_a_few_levels_of_each_map_by_one_step():
    from qnas_deploy.exporters.passes.pointwise_exact import tables

    maps = []
    for m in (_calibrated(False), _calibrated(True)):
        g = lower_model(m)
        maps.append([tables(g.tensor(n.inputs[0]), g.tensor(n.output), n.attrs, ("pytorch",))["pytorch"]
                     for n in g.nodes if n.output.endswith(".bn")])
    for a, b in zip(*maps):
        d = np.abs(a.astype(int) - b.astype(int))
        assert d.max() <= 1 and 0 < (d > 0).mean() < 0.02
