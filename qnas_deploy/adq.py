"""Adaptive Deviation for Quantization (QuantNAS section III-B, DESIGN.md section 5).

ADQ wraps a residual block: ``out = body(BN(x)) * phi(std(x)) + x`` with
``phi(s) = a*s + c`` (a 1x1 "conv" on a scalar in the QuantNAS code, initialised a=1.5,
c=0) and ``std`` over channels and pixels of each image. AdaDM's second BatchNorm is gone.

How it maps onto an integer graph, and therefore what this module quantizes:

* ``BN(x)`` (running statistics at inference) is a per-channel affine map whose output
  feeds two branches with their own ReLU + activation quantizers. It cannot fold into a
  conv through those ReLUs, so the runtime holds it as an 8-bit tensor: a per-channel
  requantisation (a depthwise 1x1 integer conv, or QLinearMul/Add), exact up to the
  rounding of its int32 bias. :meth:`normalize` quantizes it with a signed 8-bit quantizer.
* ``phi(std(x))`` in ``static`` mode (the default, fully integer) becomes one constant:
  the mean of ``phi(std(x))`` over training batches (an EMA, recalibrated before export).
  The model multiplies the branch outputs by it *before* their output quantizers, which
  is exactly what the exporter produces when it folds the constant into the last convs'
  per-channel scales. In ``dynamic`` mode the per-image product stays a tensor of its own.
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import batch_norm, global_mean
from .quant import Uint8AffineTensor

ADQ_MODES = ("static", "dynamic")


class ADQ(nn.Module):
    """The normalisation and scale halves of an ADQ block (the model owns the branches).

    Args:
        channels: channels of the block input.
        mode: ``static`` (calibrated constant scale at inference) or ``dynamic``.
        momentum: EMA momentum of the calibrated scale.
        tensor_bits: bits of the normalised tensor (32 in a float network).
    """

    def __init__(self, channels: int, mode: str = "static", momentum: float = 0.1,
                 tensor_bits: int = 8):
        super().__init__()
        if mode not in ADQ_MODES:
            raise ValueError(f"ADQ mode must be one of {ADQ_MODES}, got {mode!r}")
        self.mode = mode
        self.momentum = momentum
        self.bn = nn.BatchNorm2d(channels)
        self.bn_quant = Uint8AffineTensor(signed=True, bits=tensor_bits)
        self.phi_a = nn.Parameter(torch.tensor(1.5))
        self.phi_c = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("static_scale", torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def static(self) -> bool:
        return self.mode == "static"

    def normalize(self, x: torch.Tensor, x_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``BN(x)`` quantized. In inference mode with the input's scale known, BN is computed
        as the runtime computes it: a depthwise 1x1 integer conv with one weight per channel
        (``+-127`` at scale ``|alpha|/127``, exact) and an int32 bias on ``s_x |alpha| / 127``."""
        if self.training or x_scale is None or not self.bn_quant.enabled:
            return self.bn_quant(batch_norm(self.bn, x))
        alpha, beta = self.folded()
        s_x = torch.as_tensor(x_scale, dtype=x.dtype).detach()
        step = s_x * self.weight_scale(alpha)
        w_int = torch.where(alpha < 0, -127.0, 127.0).double().reshape(1, -1, 1, 1)
        acc = torch.round(x / s_x).double() * w_int + torch.round(beta / step).double().reshape(1, -1, 1, 1)
        return self.bn_quant(self.bn_quant.hold(acc, s_x, self.weight_scale(alpha)).to(x.dtype))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference-mode BN as ``alpha * x + beta`` per channel."""
        bn = self.bn
        alpha = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        beta = (bn.bias - bn.running_mean * alpha).detach()
        return alpha, beta

    @staticmethod
    def weight_scale(alpha: torch.Tensor) -> torch.Tensor:
        return alpha.abs().clamp_min(1e-12) / 127

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image ``phi(std(x))``, shape ``[N, 1, 1, 1]``."""
        std = torch.std(x, dim=(1, 2, 3), keepdim=True)
        return self.phi_a * std + self.phi_c

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The factor the block multiplies its branches by.

        Training: per image, as in the paper, while the EMA of its batch mean is tracked.
        Inference: the calibrated constant in static mode, per image in dynamic mode.
        """
        if self.training or (self.static and not bool(self.initialized)):
            s = self.phi(x)
            with torch.no_grad():
                m = global_mean(s.detach().mean())
                if not bool(self.initialized):
                    self.static_scale.copy_(m)
                    self.initialized.fill_(True)
                else:
                    self.static_scale.mul_(1 - self.momentum).add_(self.momentum * m)
            return s
        if self.static:
            return self.static_scale.reshape(1, 1, 1, 1)
        return self.phi(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def block_output(adq: ADQ | None, r, s, q_prod, q_out, x):
    """A residual block's output: in dynamic ADQ mode its branch result ``r`` times
    ``s = phi(std x)`` onto ``q_prod``'s grid, then ``+ x`` onto ``q_out``'s."""
    if s is not None and not adq.static:
        r = q_prod(r * s)
    return q_out(r + x)
