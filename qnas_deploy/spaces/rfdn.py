"""The RFDN search space (QuantNAS section III-A; RFDN, Liu et al. 2020).

RFDN with its convolutions replaced by searchable operations, as in the QuantNAS code:
no head (the 3 input channels are repeated ``C/3`` times), ``blocks`` residual feature
distillation blocks (RFDB) each wrapped by ADQ, a fixed 1x1 fusion and 3x3 conv, the
searchable upsample conv + PixelShuffle, and a searchable 3->3 tail with a residual.

RFDB here (``C`` channels; distillation and refinement layers are searchable)::

    x ─ skip.0 (C->C/2) ──────────────────────────────┐ d0
    x ─ body.0 (C->C) ─(+x)─ skip.1 ──────────────────┤ d1
                         └── body.1 ─(+)─ skip.2 ─────┤ d2
                                     └── body.2 ─(+)─ body.3 (C->C/2) ┤ d3
    concat(d0..d3) ─ 1x1 (2C->C) ─ ESA ─ · phi(std x) ─(+ x)

The operations of every searchable layer: ``simple_1x1/3x3/5x5`` and
``growth1_1x1/3x3/5x5``. Non-searchable convs (the 1x1 fusions, the 3x3 after the body
and ESA) run at ``fixed_bits`` (8). ESA follows RFDN's activation placement: convs that
RFDN feeds without a ReLU take an 8-bit signed tensor instead of a ReLU-quantized one.

ESA's upsampling is integer arithmetic, not RFDN's float bilinear resize: a float resize
rounds differently per runtime and CPU (onnxruntime on aarch64 differs by 1 ULP on a fifth
of its values, enough to flip the next quantizer's rounding, which the sigmoid mask then
spreads). Here the strided conv (pad 1) and the 7x7/3 max pool (mirror-padded by 3) put
small-map pixel ``m`` at input pixel ``6m``; the map comes back to full size by a fixed
bilinear x6 upsampling written as a grouped 3x3 conv of 8-bit integer weights (in units
of 1/72: exact) onto 36 sub-pixel phases, depth-to-space and a crop to the input's size;
a bias of 1/72 of a step rounds its half-step results upward in every runtime
(``GridUpsample``). Every runtime computes that conv as the reference does. ESA needs an LR input of at
least 5x5 pixels (the pool's mirror padding).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF
from torch import nn

from ..adq import ADQ, block_output
from ..anchor import symmetric_pad
from ..exporters import ir
from ..ops import ConvDef, QConv2d, QOp, chain
from ..quant import FLOAT_BITS, Uint8AffineTensor
from . import (Slot, Space, SpaceNet, lower_shuffle_up, lower_tail, register_space, shuffle_up,
               to_image)

RFDN_OPS = ("simple_1x1", "simple_3x3", "simple_5x5", "growth1_1x1", "growth1_3x3", "growth1_5x5")
ROLES = ("skip", "body", "upsample", "tail")
MIN_LR_SIZE = 5
ESA_STRIDE = 6    # conv2's stride 2 times the max pool's 3
ESA_POOL = (7, 3)  # kernel, stride


def layout(channels: int, blocks: int, scale: int) -> list[Slot]:
    c, h = channels, channels // 2
    slots: list[Slot] = []
    for k in range(blocks):
        for i in range(3):
            slots += [Slot(f"block.{k}.skip.{i}", "skip", c, h, c),
                      Slot(f"block.{k}.body.{i}", "body", c, c, c)]
        slots.append(Slot(f"block.{k}.body.3", "body", c, h, c))
    slots += [Slot("upsample", "upsample", c, 3 * scale * scale, c), Slot("tail", "tail", 3, 3, c)]
    return slots


def check(channels: int, blocks: int, scale: int) -> str | None:
    if channels % 12:
        return (f"channels: the rfdn space needs channels divisible by 12 (input repeat by 3, "
                f"distillation halves, ESA quarters), got {channels}")
    if blocks < 1:
        return f"blocks: the rfdn space needs at least 1 block, got {blocks}"
    return None


def esa_upsample_kernel(channels: int, factor: int = ESA_STRIDE) -> np.ndarray:
    """``[channels * factor^2, 1, 3, 3]`` in units of ``1/factor^2``: output pixel
    ``factor * m + i`` (sub-pixel phase ``i``) is ``(factor - i) / factor`` of small-map
    pixel ``m`` plus ``i / factor`` of ``m + 1`` along each axis, read through a 3x3 conv
    on the map padded by one (tap 0, pixel ``m - 1``, is unused). Phases in PixelShuffle's
    order (channel major, then row phase, then column phase)."""
    i = np.arange(factor)
    taps = np.stack([np.zeros(factor), factor - i, i], axis=1)           # [phase, tap]
    phases = np.einsum("ik,jl->ijkl", taps, taps).reshape(factor * factor, 1, 3, 3)
    return np.tile(phases, (channels, 1, 1, 1)).astype(np.float32)


class GridUpsample(nn.Module):
    """ESA's way back to full resolution: fixed bilinear x``factor`` as an integer conv,
    PixelShuffle, then a crop to the feature map's size; the result stays on the small
    map's grid (``q``), as RFDN's resize kept its values.

    A bilinear weight sum lands on half steps (``acc = 18 mod 36`` for the x6 kernel), and
    runtimes break such ties differently: PyTorch and the float32 requantisations of
    onnxruntime and XNNPACK round ``f32(acc) * M`` (a hair off 1/36 either way) half to even,
    LiteRT's ruy kernels round their Q31 product ties upward, its x86 ones twice. So the
    conv rounds half up by construction: weights in units of ``1 / (2 factor^2)`` (twice the
    integers) and a bias of one unit put every result ``1 / (2 factor^2)`` of a step above
    ``acc / factor^2``, so no result lies nearer a rounding boundary than that (1/72 of a
    step; LiteRT's first rounding is finer: 1/128), and every arithmetic rounds alike.
    """

    def __init__(self, channels: int, q: Uint8AffineTensor, bits: int, factor: int = ESA_STRIDE):
        super().__init__()
        self.factor, self.q = factor, q
        bits = 8 if bits < FLOAT_BITS else FLOAT_BITS
        conv = QConv2d(ConvDef(channels, channels * factor * factor, (3, 3), groups=channels, padding=(0, 0)),
                       bits, bits, bias=False, act="none")
        k = torch.tensor(esa_upsample_kernel(channels, factor)) / (factor * factor)
        # Fixed, not learned: buffers (as the bicubic anchor's).
        del conv.weight
        conv.register_buffer("weight", k)
        del conv.bias
        # The half-up bias: one accumulator unit, s_in * s_w, set from q's scale per forward.
        conv.register_buffer("bias", torch.zeros(k.shape[0]) if conv.quantized else None, persistent=False)
        wq = conv.weight_quant
        if wq.enabled:
            del wq.step
            wq.register_buffer("step", torch.full((k.shape[0], 1, 1, 1), self.unit))
            wq.initialized.fill_(True)
            # Checkpoints from before the half-up bias hold 1 / factor^2: the step is a constant.
            self.register_load_state_dict_post_hook(GridUpsample._constant_step)
        self.conv = conv
        self.shuffle = nn.PixelShuffle(factor)

    @staticmethod
    def _constant_step(module: "GridUpsample", _incompatible) -> None:
        module.conv.weight_quant.step.fill_(module.unit)

    @property
    def unit(self) -> float:
        """The weight step, ``1 / (2 factor^2)``: every weight is an even number of it."""
        return 1.0 / (2 * self.factor * self.factor)

    def _half_up_bias(self) -> None:
        """The conv's bias: one accumulator unit on the grid of ``q`` (which training moves)."""
        if self.conv.bias is not None:
            unit = self.q.scale.detach() * self.unit if self.q.enabled else torch.zeros(())
            self.conv.bias = unit.reshape(1).expand(self.conv.conv.c_out).clone()

    def forward(self, small: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        self._half_up_bias()
        u = self.conv(symmetric_pad(small, 1), self.q.scale if self.q.enabled else None, out=self.q)
        return self.shuffle(self.q.frozen(u))[..., :size[0], :size[1]]

    def lower(self, g, small: str, like: str, p: str) -> str:
        self._half_up_bias()
        c = g.tensors[small].channels
        u = g.conv(self.conv, g.pad(small, f"{p}.pad", (1, 1)), g.like(f"{p}.phases", small, c * self.factor ** 2),
                   f"{p}.conv")
        full = g.depth_to_space(u, f"{p}.shuffle", self.factor, channels=c)
        return g.node(ir.Crop(), [full, like], g.like(p, full))


def _tq(bits: int, signed: bool = True, fixed_scale: float | None = None) -> Uint8AffineTensor:
    return Uint8AffineTensor(signed=signed, fixed_scale=fixed_scale, bits=bits)


class ESA(nn.Module):
    """Enhanced Spatial Attention of RFDN, at fixed bits, with its tensors quantized."""

    def __init__(self, channels: int, bits: int, tbits: int):
        super().__init__()
        f = channels // 4

        def conv(ci, co, k, act, stride=1, padding=None):
            return QConv2d(ConvDef(ci, co, (k, k), stride=stride, padding=padding), bits, bits, act=act)

        self.conv1 = conv(channels, f, 1, "none")
        self.conv_f = conv(f, f, 1, "none")
        self.conv2 = conv(f, f, 3, "none", stride=2, padding=(1, 1))
        self.conv_max = conv(f, f, 3, "none")
        self.conv3 = conv(f, f, 3, "hwgq")
        self.conv3_ = conv(f, f, 3, "hwgq")
        self.conv4 = conv(f, channels, 1, "none")
        self.q_c1 = _tq(tbits)
        self.q_c2 = _tq(tbits)
        self.q_c3 = _tq(tbits)
        self.q_cf = _tq(tbits)
        self.q_sum = _tq(tbits)
        self.q_c4 = _tq(tbits)
        # TFLite's int8 LOGISTIC wants output scale 1/256 and zero point -128: uint8 zp 0.
        self.q_mask = _tq(tbits, signed=False, fixed_scale=1 / 256)
        self.up = GridUpsample(f, self.q_c3, bits)

    def forward(self, x: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        """``x_scale``: the scale of ``x`` (the fused features), for the int32 bias of conv1."""
        c1_ = self.q_c1(self.conv1(x, x_scale, out=self.q_c1))
        c1 = self.q_c2(self.conv2(c1_, self.q_c1.scale, out=self.q_c2))
        # Mirror padding is -inf padding here: the mirrored pixels are in the window already.
        k, st = ESA_POOL
        v_max = TF.max_pool2d(symmetric_pad(c1, k // 2), kernel_size=k, stride=st)
        c3 = self.q_c3(chain([self.conv_max, self.conv3, self.conv3_], v_max, out=self.q_c3, in_scale=self.q_c2.scale))
        c3 = self.up(c3, tuple(x.shape[-2:]))
        cf = self.q_cf(self.conv_f(c1_, self.q_c1.scale, out=self.q_cf))
        s = self.q_sum(c3 + cf)
        m = self.q_mask(torch.sigmoid(self.q_c4(self.conv4(s, self.q_sum.scale, out=self.q_c4))))
        return x * m


class RFDB(nn.Module):
    """Residual feature distillation block with searchable layers, ESA and ADQ."""

    def __init__(self, skips: list[QOp], bodies: list[QOp], channels: int, adq: str | None,
                 bits: int, tbits: int):
        super().__init__()
        self.skips, self.bodies = nn.ModuleList(skips), nn.ModuleList(bodies)
        self.adq = ADQ(channels, adq, tensor_bits=tbits) if adq else None
        self.q_d = nn.ModuleList(_tq(tbits) for _ in range(4))
        self.q_b = nn.ModuleList(_tq(tbits) for _ in range(3))
        self.q_r = nn.ModuleList(_tq(tbits) for _ in range(3))
        self.q_cat = _tq(tbits)
        self.fuse = QConv2d(ConvDef(2 * channels, channels, (1, 1)), bits, bits)
        self.q_fuse = _tq(tbits)
        self.esa = ESA(channels, bits, tbits)
        self.q_esa = _tq(tbits)
        self.q_prod = _tq(tbits) if adq == "dynamic" else None
        self.q_out = _tq(tbits)

    def forward(self, x_in: torch.Tensor, x_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``x_scale``: the scale of ``x_in`` (the previous tensor quantizer's), for ADQ's BN."""
        x = self.adq.normalize(x_in, x_scale) if self.adq else x_in
        ds = []
        for i in range(3):
            ds.append(self.q_d[i](chain([self.skips[i]], x, out=self.q_d[i])))
            x = self.q_r[i](x + self.q_b[i](chain([self.bodies[i]], x, out=self.q_b[i])))
        ds.append(self.q_d[3](chain([self.bodies[3]], x, out=self.q_d[3])))
        f = self.q_fuse(self.fuse(self.q_cat(torch.cat(ds, dim=1)), out=self.q_fuse))
        e = self.esa(f, self.q_fuse.scale)
        s = self.adq.scale(x_in) if self.adq else None
        if s is not None and self.adq.static:
            e = e * s
        return block_output(self.adq, self.q_esa(e), s, self.q_prod, self.q_out, x_in)


class RFDNNet(SpaceNet):
    """The fixed network of an RFDN-space spec (see the module docstring)."""

    def __init__(self, spec):
        super().__init__(spec)
        c, tbits, L = spec.channels, self.tbits, self.layers
        fbits = FLOAT_BITS if spec.float_only else spec.fixed_bits
        adq = spec.adq_mode if spec.adq else None
        self.blocks = nn.ModuleList(
            RFDB([L[f"block_{k}_skip_{i}"] for i in range(3)], [L[f"block_{k}_body_{i}"] for i in range(4)],
                 c, adq, fbits, tbits)
            for k in range(spec.blocks))
        self.q_in = _tq(tbits, signed=False, fixed_scale=1 / 255)
        self.q_cat = _tq(tbits)
        self.fuse = QConv2d(ConvDef(spec.blocks * c, c, (1, 1)), fbits, fbits)
        self.lr_conv = QConv2d(ConvDef(c, c, (3, 3)), fbits, fbits)
        self.q_lr = _tq(tbits)
        self.q_long = _tq(tbits)
        self.q_up = _tq(tbits)
        self.q_tail = _tq(tbits)
        self.q_image = _tq(tbits, signed=False, fixed_scale=1 / 255)
        self.shuffle = nn.PixelShuffle(spec.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: RGB in [0, 1], ``[N, 3, H, W]`` with H, W >= 5; returns ``[N, 3, sH, sW]``."""
        if min(x.shape[-2:]) < MIN_LR_SIZE:
            raise ValueError(f"the rfdn space needs inputs of at least {MIN_LR_SIZE}x{MIN_LR_SIZE} "
                             f"pixels (ESA), got {tuple(x.shape[-2:])}")
        L = self.layers
        x = self.q_in(x)
        h = x.repeat(1, self.spec.channels // 3, 1, 1)
        y, y_scale, outs = h, self.q_in.scale, []
        for block in self.blocks:
            y, y_scale = block(y, y_scale), block.q_out.scale
            outs.append(y)
        y = self.q_lr(chain([self.fuse, self.lr_conv], self.q_cat(torch.cat(outs, dim=1)), out=self.q_lr))
        y = self.q_long(y + h)
        up = shuffle_up(self, y)
        return to_image(self, up + self.q_tail(chain([L["tail"]], up, out=self.q_tail)))


def build(spec) -> RFDNNet:
    return RFDNNet(spec)


def lower(net: RFDNNet, g, x: str, adq_mode: str | None) -> str:
    """``RFDNNet.forward`` as an integer graph (``exporters.builder``)."""
    L = net.layers
    c = net.spec.channels
    h = g.tile(x, "repeat", c // 3)
    y, outs = h, []
    for k, blk in enumerate(net.blocks):
        y = _lower_rfdb(blk, g, y, f"block.{k}", c, adq_mode)
        outs.append(y)
    cat = g.node(ir.Concat(), outs, g.held("cat", c * len(outs), net.q_cat))
    y2 = g.chain([net.fuse, net.lr_conv], cat, g.held("lr_conv", c, net.q_lr), "fuse")
    y2 = g.add(y2, h, g.held("long", c, net.q_long))
    return lower_tail(net, g, lower_shuffle_up(net, g, y2), L["tail"])


def _lower_rfdb(blk: RFDB, g, x_in: str, p: str, c: int, adq_mode: str | None) -> str:
    from ..exporters.builder import AdqLowering

    adq = AdqLowering(blk.adq, blk.q_prod, adq_mode)
    x = g.batchnorm(blk.adq, x_in, f"{p}.bn") if blk.adq else x_in
    ds = []
    for i in range(3):
        ds.append(g.chain(list(blk.skips[i]), x, g.held(f"{p}.d{i}", c // 2, blk.q_d[i]), f"{p}.skip.{i}"))
        b = g.chain(list(blk.bodies[i]), x, g.held(f"{p}.b{i}", c, blk.q_b[i]), f"{p}.body.{i}")
        x = g.add(x, b, g.held(f"{p}.r{i}", c, blk.q_r[i]))
    ds.append(g.chain(list(blk.bodies[3]), x, g.held(f"{p}.d3", c // 2, blk.q_d[3]), f"{p}.body.3"))
    cat = g.node(ir.Concat(), ds, g.held(f"{p}.cat", 2 * c, blk.q_cat))
    f = g.chain([blk.fuse], cat, g.held(f"{p}.fuse", c, blk.q_fuse), f"{p}.fuse")
    m = _lower_esa(blk.esa, g, f, f"{p}.esa", c)
    e = g.mul(f, m, g.held(f"{p}.esa.out", c, blk.q_esa, adq.divisor), mult=adq.static_scale())
    if adq.dynamic:
        e = adq.scale_by_std(g, e, x_in, p, c, blk.q_esa)
    return g.add(e, x_in, g.held(f"{p}.out", c, blk.q_out))


def _lower_esa(esa: ESA, g, x: str, p: str, c: int) -> str:
    f = c // 4
    c1_ = g.chain([esa.conv1], x, g.held(f"{p}.c1_", f, esa.q_c1), f"{p}.conv1")
    c1 = g.chain([esa.conv2], c1_, g.held(f"{p}.c1", f, esa.q_c2), f"{p}.conv2")
    k, st = ESA_POOL
    vmax = g.node(ir.MaxPool(kernel=k, stride=st), [g.pad(c1, f"{p}.max.pad", (k // 2, k // 2))], g.like(f"{p}.max", c1))
    c3 = g.chain([esa.conv_max, esa.conv3, esa.conv3_], vmax, g.held(f"{p}.c3", f, esa.q_c3), f"{p}.conv3")
    c3u = esa.up.lower(g, c3, x, f"{p}.up")
    cf = g.chain([esa.conv_f], c1_, g.held(f"{p}.cf", f, esa.q_cf), f"{p}.conv_f")
    s = g.add(c3u, cf, g.held(f"{p}.sum", f, esa.q_sum))
    c4 = g.chain([esa.conv4], s, g.held(f"{p}.c4", c, esa.q_c4), f"{p}.conv4")
    return g.node(ir.Sigmoid(), [c4], g.held(f"{p}.mask", c, esa.q_mask))


SPACE = register_space(Space(
    name="rfdn", default_channels=48, default_blocks=4,
    op_sets={role: {"small": RFDN_OPS, "big": RFDN_OPS} for role in ROLES},
    layout=layout, check=check, build=build, lower=lower))
