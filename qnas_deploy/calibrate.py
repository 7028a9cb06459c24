"""Calibration before export: the statistics inference freezes, measured in inference mode.

During training, BatchNorm normalises with batch statistics, ADQ multiplies by a per-image
scale and every quantizer range is an EMA taken while the weights were still moving. The
integer graph freezes all three, so they are re-measured on the final weights, in order:

1. BatchNorm running statistics and the ADQ static scale: an exact average over the
   calibration batches (BN in training mode with ``momentum=None``; quantizers frozen);
2. every activation and tensor range, with BatchNorm and ADQ now in inference mode,
   so each range is the one of the tensor the runtime will hold;
3. the scales around each int8 add moved by a few parts per million where a runtime's
   fixed-point ADD would otherwise round some input pair otherwise than the exact add, and
   each int8 mul's output range grown by a few percent where LiteRT's MUL would round some
   product twice (``exporters/add_scales.py``);
4. ADQ's BatchNorm weights and biases moved as little where LiteRT's builtin depthwise
   kernels would otherwise requantise some input level otherwise than the exact map
   (``exporters/adq_exact.py``);
5. each conv's weight step moved by a few float32 ulps where OpenVINO's requantisation (three
   float32 roundings) or aarch64 LiteRT's (ruy: one rounding by a 31-bit multiplier) would
   otherwise differ from the exact one on some accumulator (``exporters/conv_scales.py``).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .adq import ADQ
from .quant import HWGQAct, Uint8AffineTensor

_QUANTIZERS = (HWGQAct, Uint8AffineTensor)


def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], exact_adds: bool = True) -> int:
    """Re-measure BN statistics, ADQ scales and quantizer ranges; returns the batches used.

    ``exact_adds``: then snap the add scales, ADQ BatchNorms and conv steps (steps 3 to 5) of
    a network the exporter can lower."""
    batches = list(batches)
    if not batches:
        raise ValueError("calibration needs at least one batch")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    adqs = [m for m in model.modules() if isinstance(m, ADQ)]
    quants = [m for m in model.modules() if isinstance(m, _QUANTIZERS) and m.enabled]
    saved = {m: m.momentum for m in bns + adqs + quants}
    try:
        with torch.no_grad():
            model.eval()
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average
                m.train()
            for m in adqs:
                m.initialized.fill_(False)
                m.train()
            _run(model, batches, adqs)
            model.eval()
            for m in quants:
                if getattr(m, "fixed_scale", None) is None:
                    m.initialized.fill_(False)
                m.train()
            _run(model, batches, quants)
    finally:
        for m, mom in saved.items():
            m.momentum = mom
        model.eval()
    if exact_adds:
        snap_add_scales(model)
        snap_batchnorms(model)
        snap_conv_scales(model)
    return len(batches)


def snap_add_scales(model: nn.Module) -> list:
    """Step 3 alone, on a calibrated network (``exporters.add_scales.snap``): what moved.
    Nothing for a network the exporter cannot lower."""
    from .exporters import add_scales

    return add_scales.snap(model.eval()) if _lowerable(model) else []


def snap_batchnorms(model: nn.Module) -> list:
    """Step 4 alone, on a calibrated network whose add scales are snapped
    (``exporters.adq_exact.snap``): what moved. Nothing for a network the exporter cannot lower."""
    from .exporters import adq_exact

    return adq_exact.snap(model.eval()) if _lowerable(model) else []


def snap_conv_scales(model: nn.Module) -> list:
    """Step 5 alone, on a calibrated network (``exporters.conv_scales.snap``): what moved.
    Nothing for a network the exporter cannot lower."""
    from .exporters import conv_scales

    return conv_scales.snap(model.eval()) if _lowerable(model) else []


def _lowerable(model: nn.Module) -> bool:
    from .spaces import get_space

    spec = getattr(model, "spec", None)
    return spec is not None and get_space(spec.space).lower is not None


def _run(model: nn.Module, batches: list[torch.Tensor], averaged: list[nn.Module]) -> None:
    # momentum 1/(k+1) on batch k turns the EMA into the exact mean over the batches.
    for k, x in enumerate(batches):
        for m in averaged:
            m.momentum = 1.0 / (k + 1)
        model(x)
