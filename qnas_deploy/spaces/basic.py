"""The Basic search space (QuantNAS Figure 3, appendix J).

::

    x ─ head.0 ─ head.1 ─┬─ [block] x K ──(+)── upsample ─ PixelShuffle ─(+)─┬─ tail.0 ─ tail.1 ─(+)─ out
    │                    └─────────────────┘                            │   └────────────────────┘
    └──────────────────────── nearest or bicubic x scale (anchor) ─────────┘

    block:  x ─ ADQ.BN ─┬─ body.k.0 ─ body.k.1 ─┐
                        └─ body.k.skip ─────────(+) · phi(std x) ─(+ x)─

The anchor (``"anchor": "nearest"`` or ``"bicubic"``; absent in the paper, ``"none"``)
adds the upsampled input to the shuffled output, so the network learns a residual over
the input from its first step. Nearest is data movement and one integer add at inference;
bicubic is one fixed 8-bit 5x5 conv and a depth-to-space more (``qnas_deploy.anchor``).
With an anchor, the upsample conv and the tail's last conv start at a thousandth of their
usual weights, so the network starts close to the anchor instead of adding noise to it.

Channels are ``C`` (36) everywhere except the head's input (3), the upsample output
(``3 * scale^2``) and the tail, which works at HR from 3 channels to ``C`` and back to 3.
The layers whose output only the next layer reads (``head.0``, each ``body.k.0``,
``tail.0``) may each have their own width (found.json ``width``; the sampling search
offers 24, 36 and 48: a third below and above ``C``, all divisible by the grouped ops'
3 groups); the rest meet at residual sums and keep ``C``.

``basic_lrtail`` is the same space with the tail before the shuffle, at LR::

    … ─(+)── upsample ─(+ anchor at LR)─┬─ tail.0 ─ tail.1 ─(+)─ depth-to-space (DCR) ─ out
                                         └──────────────────┘

Its tail goes from ``3 scale^2`` channels to ``C`` and back: the same MACs as the HR tail
(``3 * C * k^2`` per HR pixel is ``3 scale^2 * C * k^2`` per LR pixel), but in convs whose
rows fill int8 SIMD lanes instead of 3-channel convs on 16 times the pixels, which take half
of the Basic network's time in onnxruntime. Its upsample writes DCR order and the anchor is
added on the LR grid (``Anchor(at_lr=True)``), as in the mobile space. Not the paper's
layout: ``basic`` stays that, for the paper's experiments.

Tensors the integer runtime holds, each with its quantizer here (DESIGN.md section 4):
the input (scale 1/255), the head output, every branch output, every sum, the ADQ
normalisation, the upsample output and the output image (clamp to [0,1], 1/255 steps).
A conv whose only consumer is the next conv of a chain is not quantized on its own: the
next conv's activation quantizer is the grid the runtime requantises to.
"""
from __future__ import annotations

import torch
from torch import nn

from ..adq import ADQ, block_output
from ..anchor import Anchor, dcr_depth_to_space
from ..ops import QOp, chain
from ..quant import Uint8AffineTensor
from . import (Slot, Space, SpaceNet, lower_shuffle_up, lower_tail, register_space, shuffle_up,
               to_image)

SMALL = {
    "head": ("simple_3x3", "simple_5x5", "simple_3x3_grouped_3", "simple_5x5_grouped_3", "simple_1x1"),
    "body": ("conv_5x1_1x5", "conv_3x1_1x3", "simple_3x3", "simple_5x5"),
    "skip": ("simple_1x1", "simple_3x3", "simple_5x5"),
    "upsample": ("conv_5x1_1x5", "conv_3x1_1x3", "simple_3x3", "simple_5x5"),
    "tail": ("simple_1x1", "simple_3x3", "simple_5x5"),
}
BIG = {
    "head": ("simple_3x3", "simple_5x5", "growth2_5x5", "growth2_3x3", "simple_3x3_grouped_3",
             "simple_5x5_grouped_3", "simple_1x1_grouped_3", "simple_1x1"),
    "body": ("simple_3x3", "simple_5x5", "simple_3x3_grouped_3", "simple_5x5_grouped_3",
             "decenc_3x3_2", "decenc_5x5_2", "simple_1x1_grouped_3"),
    "skip": ("decenc_3x3_2", "decenc_5x5_2", "simple_3x3", "simple_5x5"),
    "upsample": ("conv_5x1_1x5", "conv_3x1_1x3", "simple_3x3", "simple_5x5", "growth2_5x5",
                 "growth2_3x3", "decenc_3x3_2", "decenc_5x5_2", "simple_3x3_grouped_3",
                 "simple_5x5_grouped_3", "simple_1x1_grouped_3", "simple_1x1"),
    "tail": ("simple_3x3", "simple_5x5", "growth2_5x5", "growth2_3x3", "simple_3x3_grouped_3",
             "simple_5x5_grouped_3", "simple_1x1_grouped_3", "simple_1x1"),
}
WIDTHS = (24, 36, 48)


def layout(channels: int, blocks: int, scale: int, widths: dict[str, int] | None = None) -> list[Slot]:
    c, w = channels, (widths or {}).get
    h0, t0 = w("head.0", c), w("tail.0", c)
    slots = [Slot("head.0", "head", 3, h0, h0, True), Slot("head.1", "head", h0, c, c)]
    for k in range(blocks):
        m = w(f"body.{k}.0", c)
        slots += [Slot(f"body.{k}.0", "body", c, m, m, True), Slot(f"body.{k}.1", "body", m, c, c),
                  Slot(f"body.{k}.skip", "skip", c, c, c)]
    slots += [Slot("upsample", "upsample", c, 3 * scale * scale, c),
              Slot("tail.0", "tail", 3, t0, t0, True), Slot("tail.1", "tail", t0, 3, c)]
    return slots


def layout_lrtail(channels: int, blocks: int, scale: int, widths: dict[str, int] | None = None) -> list[Slot]:
    c_up, t0 = 3 * scale * scale, (widths or {}).get("tail.0", channels)
    return layout(channels, blocks, scale, widths)[:-2] + [Slot("tail.0", "tail", c_up, t0, t0, True),
                                                          Slot("tail.1", "tail", t0, c_up, channels)]


def check(channels: int, blocks: int, scale: int) -> str | None:
    if blocks < 1:
        return f"blocks: the basic space needs at least 1 body block, got {blocks}"
    return None


def _tensor_quant(bits: int, signed: bool = True, fixed_scale: float | None = None) -> Uint8AffineTensor:
    return Uint8AffineTensor(signed=signed, fixed_scale=fixed_scale, bits=bits)


class BasicBlock(nn.Module):
    """Two body layers in sequence, one parallel skip layer, ADQ and the residual."""

    def __init__(self, body0: QOp, body1: QOp, skip: QOp, channels: int, adq: str | None, tbits: int):
        super().__init__()
        self.body0, self.body1, self.skip = body0, body1, skip
        self.adq = ADQ(channels, adq, tensor_bits=tbits) if adq else None
        self.q_body = _tensor_quant(tbits)
        self.q_skip = _tensor_quant(tbits)
        self.q_sum = _tensor_quant(tbits)
        self.q_prod = _tensor_quant(tbits) if adq == "dynamic" else None
        self.q_out = _tensor_quant(tbits)

    def forward(self, x: torch.Tensor, x_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``x_scale``: the scale of ``x`` (the previous tensor quantizer's), for ADQ's BN."""
        xn = self.adq.normalize(x, x_scale) if self.adq else x
        s = self.adq.scale(x) if self.adq else None
        m = s if s is not None and self.adq.static else None  # folded into the last convs
        b = chain([self.body0, self.body1], xn, out=self.q_body, mult=m)
        k = chain([self.skip], xn, out=self.q_skip, mult=m)
        return block_output(self.adq, self.q_sum(self.q_body(b) + self.q_skip(k)), s, self.q_prod, self.q_out, x)


class BasicNet(SpaceNet):
    """The fixed network of a Basic-space spec (see the module docstring)."""

    # With an anchor: the factor on the initial weights of the layers that write the
    # residual (the search's supernet applies it to its mixed layers too).
    ANCHOR_INIT = {"upsample": 1e-3, "tail_1": 1e-3}

    def __init__(self, spec, lr_tail: bool = False):
        super().__init__(spec)
        self.lr_tail = lr_tail
        c, tbits, L = spec.channels, self.tbits, self.layers
        adq = spec.adq_mode if spec.adq else None
        self.blocks = nn.ModuleList(
            BasicBlock(L[f"body_{k}_0"], L[f"body_{k}_1"], L[f"body_{k}_skip"], c, adq, tbits)
            for k in range(spec.blocks))
        self.q_in = _tensor_quant(tbits, signed=False, fixed_scale=1 / 255)
        self.q_head = _tensor_quant(tbits)
        self.q_long = _tensor_quant(tbits)
        self.q_up = _tensor_quant(tbits)
        self.q_tail = _tensor_quant(tbits)
        self.anchor = Anchor(spec.anchor, spec.scale, tbits, at_lr=lr_tail) if spec.anchor != "none" else None
        self.q_anchor = _tensor_quant(tbits) if self.anchor is not None else None
        if self.anchor is not None:
            # The residual must start well below the anchor's own error (bicubic: 0.043 mean
            # |error| on BSD100 patches). The blocks' output reaches the upsample conv at a
            # magnitude near 6, so a tenth of the usual weights still added 0.65 (15 times
            # that error); Adam's first steps then silenced the branch (every ReLU before
            # tail.1 dead) and the network stayed at bicubic. A thousandth adds about 0.007.
            with torch.no_grad():
                for key, f in self.ANCHOR_INIT.items():
                    for conv in L[key]:
                        conv.weight.mul_(f)
        self.q_image = _tensor_quant(tbits, signed=False, fixed_scale=1 / 255)
        self.shuffle = nn.PixelShuffle(spec.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: RGB in [0, 1], ``[N, 3, H, W]``; returns ``[N, 3, sH, sW]``."""
        L = self.layers
        x = self.q_in(x)
        h = self.q_head(chain([L["head_0"], L["head_1"]], x, out=self.q_head))
        y, y_scale = h, self.q_head.scale
        for block in self.blocks:
            y, y_scale = block(y, y_scale), block.q_out.scale
        y = self.q_long(y + h)
        # LR tail: the same sums before the shuffle (which only moves values), in DCR order.
        up = self.q_up(chain([L["upsample"]], y, out=self.q_up)) if self.lr_tail else shuffle_up(self, y)
        if self.q_anchor is not None:
            up = self.q_anchor(up + self.anchor(x, self.q_in.scale))
        out = to_image(self, up + self.q_tail(chain([L["tail_0"], L["tail_1"]], up, out=self.q_tail)))
        return dcr_depth_to_space(out, self.scale) if self.lr_tail else out


def build(spec) -> BasicNet:
    return BasicNet(spec)


def build_lrtail(spec) -> BasicNet:
    return BasicNet(spec, lr_tail=True)


def lower(net: BasicNet, g, x: str, adq_mode: str | None) -> str:
    """``BasicNet.forward`` as an integer graph (``exporters.builder``)."""
    from ..exporters.builder import AdqLowering

    L = net.layers
    c = net.spec.channels
    h = g.chain(list(L["head_0"]) + list(L["head_1"]), x, g.held("head", c, net.q_head), "head")
    y = h
    for k, blk in enumerate(net.blocks):
        p = f"block.{k}"
        adq = AdqLowering(blk.adq, blk.q_prod, adq_mode)
        xn = g.batchnorm(blk.adq, y, f"{p}.bn") if blk.adq else y
        s, d = adq.static_scale(), adq.divisor
        b = g.chain(list(blk.body0) + list(blk.body1), xn, g.held(f"{p}.body", c, blk.q_body, d), f"{p}.body", s)
        sk = g.chain(list(blk.skip), xn, g.held(f"{p}.skip", c, blk.q_skip, d), f"{p}.skip", s)
        r = g.add(b, sk, g.held(f"{p}.sum", c, blk.q_sum, d))
        if adq.dynamic:
            r = adq.scale_by_std(g, r, y, p, c, blk.q_sum)
        y = g.add(r, y, g.held(f"{p}.out", c, blk.q_out))
    y = g.add(y, h, g.held("long", c, net.q_long))
    tail = list(L["tail_0"]) + list(L["tail_1"])
    if net.lr_tail:
        c_up = 3 * net.scale ** 2
        up = g.chain(list(L["upsample"]), y, g.held("upsample", c_up, net.q_up), "upsample")
        if net.anchor is not None:
            up = g.add(up, net.anchor.lower(g, x), g.held("anchored", c_up, net.q_anchor))
        t = g.chain(tail, up, g.held("tail", c_up, net.q_tail), "tail")
        return g.depth_to_space(g.add(up, t, g.held("sr.lr", c_up, net.q_image)), "sr", net.scale, "DCR")
    up = lower_shuffle_up(net, g, y)
    if net.anchor is not None:
        up = g.add(up, net.anchor.lower(g, x), g.held("anchored", 3, net.q_anchor))
    return lower_tail(net, g, up, tail)


SPACE = register_space(Space(
    name="basic", default_channels=36, default_blocks=3,
    op_sets={role: {"small": SMALL[role], "big": BIG[role]} for role in SMALL},
    layout=layout, check=check, build=build, lower=lower, anchors=("none", "nearest", "bicubic"),
    width_choices=WIDTHS))
SPACE_LRTAIL = register_space(Space(
    name="basic_lrtail", default_channels=36, default_blocks=3,
    op_sets={role: {"small": SMALL[role], "big": BIG[role]} for role in SMALL},
    layout=layout_lrtail, check=check, build=build_lrtail, lower=lower, anchors=("none", "nearest", "bicubic"),
    width_choices=WIDTHS))
