"""The mobile space: every conv at LR resolution, built for integer kernels.

After the designs that led the Mobile AI quantized super-resolution challenges: ABPN (Du
et al., 2021: plain 3x3 convs at LR, the input repeated ``scale^2`` times and added before
one depth-to-space, the output clipped) and XLSR (Ayazoglu, 2021: grouped convs, a clipped
output). ::

    x ─ head.0 ─ body.0 ─ … ─ body.{K-1} ─ upsample ─(+)─ clip [0, 1] ─ depth-to-space (DCR) ─ out
    └────────── anchor at LR (3 s² channels): x tiled s² times, or bicubic phases ─┘

Nothing runs at HR but the last depth-to-space, which only moves bytes: the Basic space's
tail spends half its time in two convs at HR. ``upsample`` writes its ``3 s²`` channels in
DCR order (ONNX's default depth-to-space and TFLite's only one), so no target pass has to
reorder them, and the anchor is added on the same LR grid (``anchor.Anchor(at_lr=True)``).
The sum is the output image's 1/255 grid, which clamps to [0, 1]: the clip is free.

Channels are ``C`` (32, a multiple of 8 so that int8 rows fill NEON and AVX2 lanes)
everywhere but the input and the upsample output. Every layer but the upsample may have
its own width instead (found.json ``width``, a multiple of 8; the sampling search offers
16, 24, 32 and 48: from half to one and a half times ``C``): a chain has no sum that ties
widths together. Blocks ``K`` (4) count body layers. No
residuals inside (a quantized add is a float ``Sum`` in onnxruntime's file) and no ADQ.
"""
from __future__ import annotations

import torch
from torch import nn

from ..anchor import Anchor, dcr_depth_to_space
from ..ops import chain
from ..quant import Uint8AffineTensor
from . import Slot, Space, SpaceNet, register_space, to_image

OPS = {
    "head": ("simple_3x3", "simple_5x5", "simple_1x1"),
    "body": ("simple_3x3", "simple_1x1", "conv_3x1_1x3", "simple_3x3_grouped_4"),
    "upsample": ("simple_3x3", "simple_1x1", "simple_5x5"),
}
LANES = 8


WIDTHS = (16, 24, 32, 48)


def layout(channels: int, blocks: int, scale: int, widths: dict[str, int] | None = None) -> list[Slot]:
    w = (widths or {}).get
    slots, c_in = [], 3
    for name, role in [("head.0", "head")] + [(f"body.{k}", "body") for k in range(blocks)]:
        c = w(name, channels)
        slots.append(Slot(name, role, c_in, c, c, True))
        c_in = c
    return slots + [Slot("upsample", "upsample", c_in, 3 * scale * scale, c_in)]


def check_width(width: int) -> str | None:
    return None if width % LANES == 0 else f"the mobile space keeps widths a multiple of {LANES}, got {width}"


def check(channels: int, blocks: int, scale: int) -> str | None:
    if channels % LANES:
        return (f"channels: the mobile space keeps channels a multiple of {LANES} (whole int8 SIMD rows), "
                f"got {channels}")
    if blocks < 0:
        return f"blocks: the mobile space needs 0 or more body layers, got {blocks}"
    return None


class MobileNet(SpaceNet):
    """The fixed network of a mobile-space spec (see the module docstring)."""

    ANCHOR_INIT = {"upsample": 0.1}  # see BasicNet.ANCHOR_INIT

    def __init__(self, spec):
        super().__init__(spec)
        tbits, s = self.tbits, spec.scale
        self.q_in = Uint8AffineTensor(signed=False, fixed_scale=1 / 255, bits=tbits)
        self.anchor = Anchor(spec.anchor, s, tbits, at_lr=True) if spec.anchor != "none" else None
        self.q_up = Uint8AffineTensor(signed=True, bits=tbits) if self.anchor is not None else None
        self.q_image = Uint8AffineTensor(signed=False, fixed_scale=1 / 255, bits=tbits)
        if self.anchor is not None:
            # Start close to the anchor instead of adding noise to it (as the Basic space does).
            with torch.no_grad():
                for key, f in self.ANCHOR_INIT.items():
                    for conv in self.layers[key]:
                        conv.weight.mul_(f)

    def convs(self) -> list[nn.Module]:
        L = self.layers
        return [L["head_0"]] + [L[f"body_{k}"] for k in range(self.spec.blocks)] + [L["upsample"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: RGB in [0, 1], ``[N, 3, H, W]``; returns ``[N, 3, sH, sW]``."""
        x = self.q_in(x)
        if self.anchor is None:
            # The last conv writes the image grid itself: one requantisation, as in the graph.
            y = to_image(self, chain(self.convs(), x, out=self.q_image))
        else:
            up = self.q_up(chain(self.convs(), x, out=self.q_up))
            y = to_image(self, up + self.anchor(x, self.q_in.scale))
        return dcr_depth_to_space(y, self.scale)


def lower(net: MobileNet, g, x: str, adq_mode: str | None) -> str:
    """``MobileNet.forward`` as an integer graph (``exporters.builder``)."""
    c_up = 3 * net.scale ** 2
    convs = [conv for layer in net.convs() for conv in layer]
    if net.anchor is None:
        y = g.chain(convs, x, g.held("sr.lr", c_up, net.q_image), "convs")
    else:
        u = g.chain(convs, x, g.held("upsample", c_up, net.q_up), "convs")
        y = g.add(u, net.anchor.lower(g, x), g.held("sr.lr", c_up, net.q_image))
    return g.depth_to_space(y, "sr", net.scale, "DCR")


SPACE = register_space(Space(
    name="mobile", default_channels=32, default_blocks=4,
    op_sets={role: {"small": ops, "big": ops} for role, ops in OPS.items()},
    layout=layout, check=check, build=MobileNet, lower=lower, has_adq=False,
    anchors=("none", "nearest", "bicubic"), width_choices=WIDTHS, check_width=check_width))
