"""Input anchors: the upsampled LR image a network adds to its output, so it learns a residual.

``nearest`` is pure data movement. ``bicubic`` is MATLAB's ``imresize`` bicubic (cubic
kernel a = -0.5, the baseline every SR paper prints) written as what an integer runtime
runs: one fixed 5x5 convolution, grouped by colour channel, from the 3 input channels to
``3 * s^2`` sub-pixel phases, followed by PixelShuffle, on the input mirrored by two
pixels with the edge repeated (``imresize``'s border handling; a ``pad`` op in the
integer graph: ONNX slices, TFLite MIRROR_PAD), so it is ``imresize`` everywhere, border
included. Zero padding there made every image's outermost pixels dark (a flat 200 came
out 135 along a border line) and the trained layers had to learn to undo it.

At LR (``at_lr=True``, the mobile space, after ABPN) the anchor stays ``3 * s^2`` channels
at LR, in depth-to-space's DCR order (block offset major, colour minor), to be added to
the network's last conv before one depth-to-space: nearest is the input tiled ``s^2``
times; bicubic is the same phases as one dense conv (a grouped conv cannot write DCR
order: its groups' outputs are contiguous), three times the MACs of the grouped one.

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


def dcr_order(channels: int, scale: int) -> np.ndarray:
    """DCR channel ``(i*s + j)*C + c`` takes PixelShuffle (CRD) channel ``c*s*s + i*s + j``."""
    return np.array([c * scale * scale + i * scale + j for i in range(scale) for j in range(scale)
                     for c in range(channels)])


def bicubic_kernel_dcr(scale: int, channels: int = 3) -> np.ndarray:
    """``[channels * scale^2, channels, 5, 5]``: :func:`bicubic_kernel` as a dense conv whose
    outputs are in DCR order (zero weights across colours)."""
    grouped = bicubic_kernel(scale, channels)
    per = scale * scale
    dense = np.zeros((channels * per, channels, _TAPS, _TAPS), grouped.dtype)
    for c in range(channels):
        dense[c * per:(c + 1) * per, c] = grouped[c * per:(c + 1) * per, 0]
    return dense[dcr_order(channels, scale)]


def dcr_depth_to_space(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Depth-to-space in DCR order (ONNX's default mode, TFLite's only one): output pixel
    ``(h*s + i, w*s + j)`` of colour ``c`` is input channel ``(i*s + j)*C + c``."""
    n, cs, h, w = x.shape
    c = cs // (scale * scale)
    return x.view(n, scale, scale, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * scale, w * scale)


class Anchor(nn.Module):
    """``forward(xq, x_scale)``: the ``mode`` upsampling of the quantized input image (at LR
    in DCR order with ``at_lr``)."""

    def __init__(self, mode: str, scale: int, tensor_bits: int = ANCHOR_BITS, at_lr: bool = False):
        """``tensor_bits``: the network's tensor bits; 32 (an all-float network) makes the
        bicubic conv float as well."""
        super().__init__()
        if mode not in ("nearest", "bicubic"):
            raise ValueError(f"anchor mode must be 'nearest' or 'bicubic', got {mode!r}")
        self.mode, self.scale, self.at_lr = mode, scale, at_lr
        if mode == "bicubic":
            c_out = 3 * scale * scale
            bits = ANCHOR_BITS if tensor_bits < FLOAT_BITS else FLOAT_BITS
            # No zero padding: the input is mirrored first, as imresize does at the border.
            conv = QConv2d(ConvDef(3, c_out, (_TAPS, _TAPS), groups=1 if at_lr else 3, padding=(0, 0)), bits, bits,
                           bias=False, act="none")
            k = torch.tensor(bicubic_kernel_dcr(scale) if at_lr else bicubic_kernel(scale), dtype=torch.float32)
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
            if self.at_lr:
                return xq.repeat(1, self.scale * self.scale, 1, 1)
            return nn.functional.interpolate(xq, scale_factor=self.scale, mode="nearest")
        u = self.q_conv(self.conv(symmetric_pad(xq, _PAD), x_scale, out=self.q_conv))
        return u if self.at_lr else self.shuffle(u)

    def lower(self, g, x: str) -> str:
        """The anchor as an integer graph (``exporters.builder``). Nearest is pure data
        movement: each channel tiled ``scale^2`` times, then depth-to-space in DCR order
        (block offset major, channel minor). Bicubic is the fixed conv, then PixelShuffle."""
        if self.mode == "nearest":
            t = g.tile(x, "anchor.tile", self.scale * self.scale)
            return t if self.at_lr else g.depth_to_space(t, "anchor", self.scale, "DCR")
        xp = g.pad(x, "anchor.pad", (_PAD, _PAD))
        u = g.conv(self.conv, xp, g.held("anchor.conv", 3 * self.scale ** 2, self.q_conv), "anchor.conv")
        return u if self.at_lr else g.depth_to_space(u, "anchor", self.scale)

    def extra_repr(self) -> str:
        return f"{self.mode}, x{self.scale}" + (", at LR (DCR)" if self.at_lr else "")
