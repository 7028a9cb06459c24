"""Quantizer modules: small ``nn.Module``s over the pure functions of ``functional.py``.

Names follow the configuration they implement (as Brevitas presets do):

* :class:`LSQWeightPerChannel`: symmetric per-output-channel weights, learned step (LSQ);
* :class:`HWGQAct`: ReLU + unsigned activations on a uniform HWGQ grid, zero point 0;
* :class:`Uint8AffineTensor`: 8-bit affine quantizer for every other tensor an integer
  runtime holds (residual sums, concatenations, ADQ products, the network input and output).

``bits == 32`` turns a quantizer into its float counterpart (identity, or plain ReLU),
which gives ordinary float networks from the same code.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..distributed import global_max, global_std
from . import functional as F

FLOAT_BITS = 32


def _frozen(q: nn.Module) -> bool:
    """Whether ``q``'s grid is fixed. While it measures its range (training, calibration)
    it must see unclipped values, so nothing may be held on its previous grid."""
    return q.enabled and not q.training and bool(q.initialized)



def _track(stat: torch.Tensor, initialized: torch.Tensor, value: torch.Tensor, momentum: float) -> None:
    """A range statistic: the first observation, then an exponential moving average."""
    if not bool(initialized):
        stat.copy_(value)
        initialized.fill_(True)
    else:
        stat.mul_(1 - momentum).add_(momentum * value)

def float32_math(forward: Callable) -> Callable:
    """Run a quantizer in float32 even inside ``torch.autocast`` (mixed-precision training).

    ``round(x / step)`` needs the quotient to a fraction of one step: bfloat16 keeps 8
    significant bits and float16 11, so a value near 200 steps would already round onto
    the wrong level, and range statistics would drift. Autocast leaves round, clamp, div
    and mul in their input's dtype, so the quantizer takes its input back to float32 and
    turns autocast off; only the convolutions between quantizers run in the low precision.
    """
    @functools.wraps(forward)
    def wrapped(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return forward(self, x.float(), *args, **kwargs)
        return forward(self, x, *args, **kwargs)

    return wrapped


# The 8-bit integer ranges of the narrower weight grids (``spec.WEIGHT_GRIDS``).
GRID_RANGES = {"full": (-128, 127), "narrow": (-127, 127), "7bit": (-64, 63)}


class LSQWeightPerChannel(nn.Module):
    """LSQ weight quantizer: symmetric, per output channel, integer range ``[-2^(b-1), 2^(b-1)-1]``.

    The step is a parameter of shape ``[C_out, 1, 1, 1]``, initialised from the weights
    (``2 mean|w| / sqrt(Q_P)``) the first time the quantizer sees them, and trained with
    LSQ's gradient scale ``1/sqrt(N_c Q_P)`` with ``N_c`` the weights per channel.

    Nothing keeps the learned parameter positive (small weights start with small steps,
    and training can carry them through zero), so the grid uses its magnitude,
    :attr:`scale`: a negative step would otherwise need its integers negated at export,
    and ``-(-128)`` does not fit in int8.
    """

    bypass = False  # set by :func:`quantizers_off`

    def __init__(self, bits: int, out_channels: int):
        super().__init__()
        self.bits = bits
        self.qmin, self.qmax = (F.int_range(bits, signed=True) if bits < FLOAT_BITS else (0, 0))
        if self.enabled:
            self.step = nn.Parameter(torch.ones(out_channels, 1, 1, 1))
        else:
            self.register_parameter("step", None)  # a float layer has no step to learn
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def enabled(self) -> bool:
        return self.bits < FLOAT_BITS and not self.bypass

    def init_from(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            self.step.copy_(F.lsq_init_step(w, self.qmax))
            self.initialized.fill_(True)

    @float32_math
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        if not bool(self.initialized):
            self.init_from(w)
        gs = F.lsq_grad_scale(w[0].numel(), self.qmax)
        # The leading channels' steps for the leading rows of a wider layer's weights (a
        # width path of the one-shot supernet); all of them otherwise.
        return F.fake_quant_lsq(w, self.step[:w.shape[0]].abs(), self.qmin, self.qmax, gs)

    @property
    def scale(self) -> torch.Tensor:
        """The step of the grid, ``|step|`` (``[C_out, 1, 1, 1]``): what the runtime stores."""
        return self.step.abs()

    def integer_weight(self, w: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """The integers the runtime stores (int64 tensor in ``[qmin, qmax]``); ``rows``: ``w``
        holds those output channels only."""
        return torch.clamp(torch.round(w.detach() / self.scale.detach()[rows]), self.qmin, self.qmax).long()

    def narrow_to(self, grid: str) -> None:
        """8-bit weights on ``grid`` (``spec.WEIGHT_GRIDS``: ``"narrow"`` [-127, 127],
        ``"7bit"`` [-64, 63]); other widths stay. A fixed grid (a buffer step, as the bicubic
        anchor's) keeps its range on fewer levels."""
        lo, hi = GRID_RANGES[grid]
        if self.bits != 8 or (self.qmin, self.qmax) == (lo, hi):
            return
        old = self.qmax
        self.qmin, self.qmax = lo, hi
        if not isinstance(self.step, nn.Parameter) and bool(self.initialized):
            with torch.no_grad():
                self.step.mul_(old / self.qmax)

    def narrow_to_7bit(self) -> None:
        self.narrow_to("7bit")

    def extra_repr(self) -> str:
        grid = next((g for g, r in GRID_RANGES.items() if self.bits == 8 and r == (self.qmin, self.qmax)), "full")
        return f"bits={self.bits}" + (f", {grid} grid" if grid != "full" else "")


def apply_weight_grid(model: nn.Module, grid: str) -> nn.Module:
    """Every weight quantizer of ``model`` on ``grid`` (``spec.WEIGHT_GRIDS``)."""
    if grid != "full":
        for m in model.modules():
            if isinstance(m, LSQWeightPerChannel):
                m.narrow_to(grid)
    return model


class HWGQAct(nn.Module):
    """ReLU + HWGQ activation quantizer with a step scaled to the tensor's statistics.

    The step is ``hwgq_step(b) * sigma`` where ``sigma`` estimates the standard deviation
    of the (pre-ReLU) input, as HWGQ assumes a half-wave Gaussian: an exponential moving
    average over training batches, frozen in eval mode, so that the exported model holds
    one constant scale per tensor (zero point 0, ``2^b`` levels).
    """

    bypass = False  # set by :func:`quantizers_off`

    def __init__(self, bits: int, momentum: float = 0.1):
        super().__init__()
        self.bits = bits
        self.momentum = momentum
        self.register_buffer("sigma", torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def enabled(self) -> bool:
        return self.bits < FLOAT_BITS and not self.bypass

    @property
    def step(self) -> torch.Tensor:
        return self.sigma.clamp_min(1e-8) * F.hwgq_step(self.bits)

    def observe(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            _track(self.sigma, self.initialized, global_std(x).clamp_min(1e-8), self.momentum)

    @float32_math
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return torch.relu(x)
        if self.training or not bool(self.initialized):
            self.observe(x)
        return F.hwgq(x, self.step, self.bits)

    def hold(self, acc: torch.Tensor, s_in, s_w: torch.Tensor, mult=None) -> torch.Tensor:
        """A conv accumulator requantised onto this grid in one rounding, as the integer
        runtime writes a conv that feeds this quantizer (see :func:`F.requantize`); the
        real values while the grid is not frozen (see :func:`_frozen`)."""
        if not _frozen(self):
            return F.scale_accumulator(acc, s_in, s_w, mult)
        lo, hi = F.int_range(self.bits, signed=False)
        return F.requantize(acc, s_in, s_w, self.step, 0, lo, hi, mult) * self.step

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class Uint8AffineTensor(nn.Module):
    """8-bit affine quantizer for a tensor the integer runtime holds.

    Stored as uint8 (ONNX on x86 wants uint8 activations; TFLite's int8 is the same grid
    shifted by 128). ``signed=True`` tensors (residual sums, conv outputs) use zero point
    128 and ``scale = max|x| / 127``; unsigned ones zero point 0 and ``scale = max / 255``.
    The range is an EMA of the batch extremes during training, frozen in eval mode.
    ``fixed_scale`` pins the scale (the network input: 1/255 makes uint8 pixels lossless).
    """

    bypass = False  # set by :func:`quantizers_off`

    def __init__(self, signed: bool, fixed_scale: float | None = None, momentum: float = 0.1,
                 bits: int = 8):
        super().__init__()
        self.signed = signed
        self.bits = bits
        self.momentum = momentum
        self.fixed_scale = fixed_scale
        self.qmin, self.qmax = F.int_range(bits, signed=False) if bits < FLOAT_BITS else (0, 0)
        self.register_buffer("absmax", torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(fixed_scale is not None))

    @property
    def enabled(self) -> bool:
        return self.bits < FLOAT_BITS and not self.bypass

    @property
    def zero_point(self) -> int:
        return 2 ** (self.bits - 1) if self.signed else 0

    @property
    def scale(self) -> torch.Tensor:
        if self.fixed_scale is not None:
            return torch.tensor(self.fixed_scale, device=self.absmax.device)
        return self.scale_for(self.absmax)

    def scale_for(self, absmax: torch.Tensor) -> torch.Tensor:
        """The scale this quantizer would hold with range ``absmax``."""
        span = (2 ** (self.bits - 1) - 1) if self.signed else self.qmax
        return absmax.clamp_min(1e-8) / span

    def observe(self, x: torch.Tensor) -> None:
        if self.fixed_scale is not None:
            return
        with torch.no_grad():
            m = x.detach().abs().max() if self.signed else x.detach().clamp_min(0).max()
            m = global_max(m)
            _track(self.absmax, self.initialized, m.float().clamp_min(1e-8), self.momentum)

    @float32_math
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.training or not bool(self.initialized):
            self.observe(x)
        return F.fake_quant(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def hold(self, acc: torch.Tensor, s_in, s_w: torch.Tensor, mult=None) -> torch.Tensor:
        """A conv accumulator requantised onto this grid in one rounding, as the integer
        runtime writes a conv whose output this tensor is (see :func:`F.requantize`); the
        real values while the grid is not frozen (see :func:`_frozen`)."""
        if not _frozen(self):
            return F.scale_accumulator(acc, s_in, s_w, mult)
        q = F.requantize(acc, s_in, s_w, self.scale, self.zero_point, self.qmin, self.qmax, mult)
        return (q - self.zero_point) * self.scale

    @float32_math
    def frozen(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize onto this quantizer's grid without observing ``x``.

        For ops whose output must keep the input's parameters (TFLite's RESIZE_BILINEAR
        and MAX_POOL_2D require equal input and output scale and zero point).
        """
        if not self.enabled:
            return x
        return F.fake_quant(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"{kind}, zero_point={self.zero_point}" + (
            f", fixed_scale={self.fixed_scale}" if self.fixed_scale is not None else "")




@contextmanager
def quantizers_off(model: nn.Module, off: bool = True) -> Iterator[None]:
    """``model`` as its float network while inside (the float warm-up of training):
    quantizers pass values through and neither observe ranges nor initialise steps, so
    they start from the weights and statistics the float phase leaves."""
    qs = [m for m in model.modules() if isinstance(m, (LSQWeightPerChannel, HWGQAct, Uint8AffineTensor))] if off else []
    for q in qs:
        q.bypass = True
    try:
        yield
    finally:
        for q in qs:
            q.bypass = False
