"""An ESPCN-like space (Shi et al. 2016): the small baseline of QuantNAS appendix I.

``conv.0`` (3 -> C, 5x5 in ESPCN) and ``conv.1`` (C -> C/2, 3x3) extract features at LR,
``upsample`` maps to ``3 * scale^2`` channels and PixelShuffle rearranges them. ESPCN's
tanh is replaced by the ReLU every quantized conv of this package has in front, so the
same quantizers and exporters apply. No residuals, no ADQ (``adq`` must be false).
"""
from __future__ import annotations

import torch
from torch import nn

from ..ops import chain
from ..quant import Uint8AffineTensor
from . import Slot, Space, SpaceNet, register_space

OPS = ("simple_1x1", "simple_3x3", "simple_5x5", "simple_3x3_grouped_3", "simple_5x5_grouped_3")


def layout(channels: int, blocks: int, scale: int) -> list[Slot]:
    c, h = channels, channels // 2
    return [Slot("conv.0", "conv", 3, c, c), Slot("conv.1", "conv", c, h, c),
            Slot("upsample", "upsample", h, 3 * scale * scale, h)]


def check(channels: int, blocks: int, scale: int) -> str | None:
    if channels % 2:
        return f"channels: the espcn space halves its channels, so they must be even, got {channels}"
    if blocks != 1:
        return f"blocks: the espcn space has no repeated blocks; set blocks to 1, got {blocks}"
    return None


class ESPCNNet(SpaceNet):
    def __init__(self, spec):
        super().__init__(spec)
        tbits = self.tbits
        self.q_in = Uint8AffineTensor(signed=False, fixed_scale=1 / 255, bits=tbits)
        self.q_image = Uint8AffineTensor(signed=False, fixed_scale=1 / 255, bits=tbits)
        self.shuffle = nn.PixelShuffle(spec.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.layers
        convs = [L["conv_0"], L["conv_1"], L["upsample"]]
        y = chain(convs, self.q_in(x), out=self.q_image)
        # Quantizing before or after PixelShuffle is the same: it only moves values.
        return self.shuffle(self.q_image(y)) if self.q_image.enabled else self.shuffle(y)


def lower(net: ESPCNNet, g, x: str, adq_mode: str | None) -> str:
    """``ESPCNNet.forward`` as an integer graph (``exporters.builder``)."""
    L = net.layers
    convs = list(L["conv_0"]) + list(L["conv_1"]) + list(L["upsample"])
    u = g.chain(convs, x, g.held("upsample", 3 * net.scale ** 2, net.q_image), "convs")
    return g.depth_to_space(u, "sr", net.scale)


SPACE = register_space(Space(
    name="espcn", default_channels=64, default_blocks=1,
    op_sets={role: {"small": OPS, "big": OPS} for role in ("conv", "upsample")},
    layout=layout, check=check, build=ESPCNNet, lower=lower, has_adq=False))
