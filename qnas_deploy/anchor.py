"""Input anchors: the upsampled LR image a network adds to its output, so it learns a residual.

``nearest`` is pure data movement. ``bicubic`` is MATLAB's ``imresize`` bicubic (cubic
kernel a = -0.5, the baseline every SR paper prints) written as what an integer runtime
runs: one fixed 5x5 convolution, grouped by colour channel, from the 3 input channels to
``3 * s^2`` sub-pixel phases, followed by PixelShuffle, on the input mirrored by two
pixels with the edge repeated (``imresize``'s border handling; a ``pad`` op in the
integer graph: ONNX slices, TFLite MIRROR_PAD), so it is ``imresize`` everywhere, border
included. Zero padding there made every image's outermost pixels dark (a flat 200 came
out 135 along a border line) and the trained layers had to learn to undo it.

The conv is an ordinary :class:`~qnas_deploy.ops.QConv2d` (8-bit, or float in an
all-float network) whose weights and steps are buffers, not parameters, so training
leaves them alone while cost accounting and every exporter treat it like the other convs.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .imresize import cubic
from .ops import ConvDef, QConv2d
from .quant import FLOAT_BITS, Uint8AffineTensor

ANCHOR_BITS = 8
_TAPS = 5  # every output phase of a scale >= 2 reads LR offsets -2..2
_PAD = _TAPS // 2


def symmetric_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """``x`` mirrored by ``p`` pixels on each side with the edge pixel repeated (MATLAB's
    ``imresize`` border; numpy's ``symmetric``), for ``p`` up to the image size."""
    if min(x.shape[-2:]) < p:
        raise ValueError(f"the bicubic anchor needs images of at least {p}x{p} pixels, got {tuple(x.shape[-2:])}")
    x = torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)


def bicubic_phase_weights(scale: int) -> np.ndarray:
    """``[scale, 5]``: the weight of LR offsets -2..2 for each output phase along one axis.

    Output pixel ``o = scale * y + i`` samples the LR coordinate ``(o + 0.5) / scale - 0.5``
    (the pixel-centre convention of ``imresize``), i.e. ``y + (i + 0.5) / scale - 0.5``.
    """
    d = (np.arange(scale) + 0.5) / scale - 0.5
    w = cubic(d[:, None] - np.arange(-2, 3)[None, :])
    return w / w.sum(axis=1, keepdims=True)


def bicubic_kernel(scale: int, channels: int = 3) -> np.ndarray:
    """``[channels * scale^2, 1, 5, 5]``, a conv grouped by channel, in PixelShuffle's order
    (channel major, then row phase, then column phase)."""
    w1 = bicubic_phase_weights(scale)
    phases = np.einsum("ik,jl->ijkl", w1, w1).reshape(scale * scale, 1, _TAPS, _TAPS)
    return np.tile(phases, (channels, 1, 1, 1))


class Anchor(nn.Module):
    """``forward(xq, x_scale)``: the ``mode`` upsampling of the quantized input image."""

    def __init__(self, mode: str, scale: int, tensor_bits: int = ANCHOR_BITS):
        """``tensor_bits``: the network's tensor bits; 32 (an all-float network) makes the
        bicubic conv float as well."""
        super().__init__()
        if mode not in ("nearest", "bicubic"):
            raise ValueError(f"anchor mode must be 'nearest' or 'bicubic', got {mode!r}")
        self.mode, self.scale = mode, scale
        if mode == "bicubic":
            c_out = 3 * scale * scale
            bits = ANCHOR_BITS if tensor_bits < FLOAT_BITS else FLOAT_BITS
            # No zero padding: the input is mirrored first, as imresize does at the border.
            conv = QConv2d(ConvDef(3, c_out, (_TAPS, _TAPS), groups=3, padding=(0, 0)), bits, bits, bias=False,
                           act="none")
            k = torch.tensor(bicubic_kernel(scale), dtype=torch.float32)
            # Fixed, not learned: buffers, so optimizers and gradients never see them.
            del conv.weight
            conv.register_buffer("weight", k)
            wq = conv.weight_quant
            if wq.enabled:
                del wq.step
                # The largest tap on the largest level: every 8-bit tap is within half a
                # step (max |w| / 254) of the float one.
                wq.register_buffer("step", k.abs().amax(dim=(1, 2, 3)).reshape(-1, 1, 1, 1) / wq.qmax)
                wq.initialized.fill_(True)
            self.conv = conv
            self.q_conv = Uint8AffineTensor(signed=True, bits=tensor_bits)
            self.shuffle = nn.PixelShuffle(scale)

    def forward(self, xq: torch.Tensor, x_scale: torch.Tensor | float) -> torch.Tensor:
        if self.mode == "nearest":
            return nn.functional.interpolate(xq, scale_factor=self.scale, mode="nearest")
        return self.shuffle(self.q_conv(self.conv(symmetric_pad(xq, _PAD), x_scale, out=self.q_conv)))

    def lower(self, g, x: str) -> str:
        """The anchor as an integer graph (``exporters.builder``). Nearest is pure data
        movement: each channel tiled ``scale^2`` times, then depth-to-space in DCR order
        (block offset major, channel minor). Bicubic is the fixed conv, then PixelShuffle."""
        if self.mode == "nearest":
            return g.depth_to_space(g.tile(x, "anchor.tile", self.scale * self.scale), "anchor", self.scale, "DCR")
        xp = g.pad(x, "anchor.pad", (_PAD, _PAD))
        u = g.conv(self.conv, xp, g.held("anchor.conv", 3 * self.scale ** 2, self.q_conv), "anchor.conv")
        return g.depth_to_space(u, "anchor", self.scale)

    def extra_repr(self) -> str:
        return f"{self.mode}, x{self.scale}"
