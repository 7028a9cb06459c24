"""Lowering: a calibrated model of any space -> the integer graph of ``ir.py``.

Folding happens here, once, and mirrors the fake-quant model exactly:

* every conv gets its LSQ integers, per-channel steps and its int32 bias on the
  ``s_in * s_w`` grid the model already trains with (``QConv2d.bias_scale``);
* a conv that feeds only the next conv of a chain requantises straight onto that conv's
  HWGQ grid (zero point 0, ``2^b - 1`` levels), as the fake-quant model does;
* ADQ's BatchNorm becomes a depthwise 1x1 integer conv (one weight ``+-127`` per
  channel, exact); it cannot merge into the next conv because a ReLU and a quantizer sit
  in between, and as its own conv it is exact on zero-padded borders too;
* the static ADQ scale multiplies the output scale of the branches' last convs (exactly
  where the model multiplies), the dynamic one stays a small float subgraph;
* PixelShuffle is depth-to-space in PixelShuffle's (CRD) channel order.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..adq import ADQ
from ..errors import BadInput
from ..ops import QConv2d, QOp
from ..quant import HWGQAct, Uint8AffineTensor, int_range
from .ir import Graph, Node, Tensor


class _Builder:
    def __init__(self):
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []

    # tensors -----------------------------------------------------------------------
    def _add(self, t: Tensor) -> Tensor:
        base, k = t.name, 1
        while t.name in self.tensors:
            k += 1
            t.name = f"{base}_{k}"
        self.tensors[t.name] = t
        return t

    def held(self, name: str, channels: int, q: Uint8AffineTensor, divide_scale_by: float = 1.0) -> Tensor:
        if not q.enabled:
            return self._add(Tensor(name, channels))
        scale = float(np.float32(float(q.scale) / divide_scale_by)) if divide_scale_by != 1.0 else float(q.scale)
        return self._add(Tensor(name, channels, scale, q.zero_point, q.qmin, q.qmax))

    def grid_of(self, conv: QConv2d, name: str) -> Tensor:
        act = conv.act_quant
        if isinstance(act, HWGQAct) and act.enabled:
            return self._add(Tensor(name, conv.conv.c_in, float(act.step), 0, *int_range(act.bits, signed=False)))
        return self._add(Tensor(name, conv.conv.c_in))

    def like(self, name: str, src: str, channels: int | None = None) -> Tensor:
        s = self.tensors[src]
        return self._add(Tensor(name, channels or s.channels, s.scale, s.zero_point, s.qmin, s.qmax))

    def node(self, op: str, inputs: list[str], out: Tensor, name: str = "", **attrs) -> str:
        self.nodes.append(Node(op, list(inputs), out.name, attrs, name or out.name))
        return out.name

    # operations --------------------------------------------------------------------
    def chain(self, convs: list[QConv2d], x: str, out: Tensor, name: str, mult: float = 1.0) -> str:
        """A sequence of convs, each feeding the next one's activation quantizer."""
        cur = x
        for i, conv in enumerate(convs):
            hwgq = isinstance(conv.act_quant, HWGQAct)
            if i == 0 and hwgq and conv.quantized:
                grid = self.grid_of(conv, f"{name}.in")
                if not grid.same_grid(self.tensors[cur]):
                    cur = self.node("requant", [cur], grid)
            if i + 1 < len(convs):
                nxt = convs[i + 1]
                dst = self.grid_of(nxt, f"{name}.{i + 1}.in") if nxt.quantized else \
                    self._add(Tensor(f"{name}.{i}.out", conv.conv.c_out))
            else:
                dst = out
            self.conv(conv, cur, dst, f"{name}.{i}", mult if i + 1 == len(convs) else 1.0,
                      relu_in=hwgq and (not conv.quantized))
            cur = dst.name
        return cur

    def conv(self, conv: QConv2d, x: str, out: Tensor, name: str, mult: float = 1.0, relu_in: bool = False) -> str:
        c = conv.conv
        xt = self.tensors[x]
        attrs = dict(stride=c.stride, pad=tuple(c.pad), dilation=c.dilation, groups=c.groups,
                     kernel=tuple(c.kernel), mult=float(np.float32(mult)))
        w = conv.weight.detach()
        if conv.quantized and xt.quantized:
            bs = conv.bias_scale(xt.scale if not isinstance(conv.act_quant, HWGQAct) else None)
            weight = conv.weight_quant.integer_weight(w).numpy()
            w_scale = conv.weight_quant.scale.detach().reshape(-1).numpy().astype(np.float32)
            bias = (torch.round(conv.bias.detach() / bs).numpy().astype(np.int64)
                    if conv.bias is not None else np.zeros(c.c_out, np.int64))
            attrs.update(weight=weight.astype(np.int8), w_scale=w_scale, w_bits=conv.w_bits,
                         bias=bias.astype(np.int32))
        else:
            wq = conv.weight_quant(w) if conv.weight_quant.enabled else w
            b = conv.bias.detach() if conv.bias is not None else torch.zeros(c.c_out)
            attrs.update(weight=wq.detach().numpy().astype(np.float32), bias=b.numpy().astype(np.float32),
                         relu_in=relu_in, float=True)
        return self.node("conv", [x], out, name, **attrs)

    def batchnorm(self, adq: ADQ, x: str, name: str) -> str:
        """ADQ's inference-mode BN as a depthwise 1x1 conv, exactly as ``ADQ.normalize``."""
        xt = self.tensors[x]
        out = self.held(name, xt.channels, adq.bn_quant)
        alpha, beta = adq.folded()
        cin = xt.channels
        attrs = dict(stride=1, pad=(0, 0), dilation=1, groups=cin, kernel=(1, 1), mult=1.0)
        if xt.quantized and out.quantized:
            ws = ADQ.weight_scale(alpha)
            step = torch.as_tensor(xt.scale, dtype=torch.float32) * ws
            sign = torch.where(alpha < 0, -1, 1)
            attrs.update(weight=(127 * sign).numpy().astype(np.int8).reshape(cin, 1, 1, 1),
                         w_scale=ws.numpy().astype(np.float32), w_bits=8,
                         bias=torch.round(beta / step).numpy().astype(np.int32))
        else:
            attrs.update(weight=alpha.numpy().astype(np.float32).reshape(cin, 1, 1, 1),
                         bias=beta.numpy().astype(np.float32), relu_in=False, float=True)
        return self.node("conv", [x], out, name, **attrs)

    def binary(self, op: str, a: str, b: str, out: Tensor, mult: float = 1.0) -> str:
        return self.node(op, [a, b], out, mult=float(np.float32(mult)))

    def adq_scale(self, adq: ADQ, x: str, name: str) -> str:
        """The per-image ``phi(std(x))`` of dynamic ADQ (a float tensor ``[N, 1, 1, 1]``)."""
        return self.node("adq_scale", [x], self._add(Tensor(name, 1)), a=float(adq.phi_a), c=float(adq.phi_c))


def _convs(op: QOp) -> list[QConv2d]:
    return list(op)


def _static_scale(adq: ADQ | None, mode: str) -> float:
    if adq is None or mode != "static":
        return 1.0
    s = float(adq.static_scale)
    if not s > 0:
        raise BadInput(f"ADQ static scale is {s:.4g} (not positive); export with --adq dynamic")
    return s


def _adq_mode(adq: ADQ | None, override: str | None) -> str | None:
    if adq is None:
        return None
    return override or adq.mode


# spaces --------------------------------------------------------------------------------

def _lower_basic(net, g: _Builder, x: str, adq_mode: str | None) -> str:
    L = net.layers
    h = g.chain(_convs(L["head_0"]) + _convs(L["head_1"]), x, g.held("head", net.spec.channels, net.q_head), "head")
    y = h
    c = net.spec.channels
    for k, blk in enumerate(net.blocks):
        p = f"block.{k}"
        mode = _adq_mode(blk.adq, adq_mode)
        xn = g.batchnorm(blk.adq, y, f"{p}.bn") if blk.adq else y
        s = _static_scale(blk.adq, mode)
        if mode == "dynamic":
            # Unscaled branches. A block trained in static mode has grids measured on the
            # scaled branches: divide them by the calibrated scale, and put the product on
            # the grid of the scaled sum (its range is the same on average).
            d = 1.0 if blk.q_prod is not None else float(blk.adq.static_scale)
            b = g.chain(_convs(blk.body0) + _convs(blk.body1), xn, g.held(f"{p}.body", c, blk.q_body, d), f"{p}.body")
            sk = g.chain(_convs(blk.skip), xn, g.held(f"{p}.skip", c, blk.q_skip, d), f"{p}.skip")
            r = g.binary("add", b, sk, g.held(f"{p}.sum", c, blk.q_sum, d))
            r = g.binary("mul", r, g.adq_scale(blk.adq, y, f"{p}.adq_scale"), g.held(f"{p}.prod", c, blk.q_prod or blk.q_sum))
        else:
            b = g.chain(_convs(blk.body0) + _convs(blk.body1), xn, g.held(f"{p}.body", c, blk.q_body), f"{p}.body", s)
            sk = g.chain(_convs(blk.skip), xn, g.held(f"{p}.skip", c, blk.q_skip), f"{p}.skip", s)
            r = g.binary("add", b, sk, g.held(f"{p}.sum", c, blk.q_sum))
        y = g.binary("add", r, y, g.held(f"{p}.out", c, blk.q_out))
    y = g.binary("add", y, h, g.held("long", c, net.q_long))
    s2 = net.scale ** 2
    u = g.chain(_convs(L["upsample"]), y, g.held("upsample", 3 * s2, net.q_up), "upsample")
    up = g.node("depth_to_space", [u], g.like("shuffle", u, 3), blocksize=net.scale)
    if net.anchor is not None:
        a = _nearest(g, x, net.scale) if net.anchor.mode == "nearest" else _bicubic(g, net.anchor, x)
        up = g.binary("add", up, a, g.held("anchored", 3, net.q_anchor))
    t = g.chain(_convs(L["tail_0"]) + _convs(L["tail_1"]), up, g.held("tail", 3, net.q_tail), "tail")
    return g.binary("add", up, t, g.held("sr", 3, net.q_image))


def _nearest(g: _Builder, x: str, scale: int) -> str:
    """Nearest-neighbour upsampling as pure data movement: each channel tiled ``scale^2``
    times, then depth-to-space in DCR order (block offset major, channel minor)."""
    t = g.node("tile", [x], g.like("anchor.tile", x, 3 * scale * scale), times=scale * scale)
    return g.node("depth_to_space", [t], g.like("anchor", x), blocksize=scale, mode="DCR")


def _bicubic(g: _Builder, anchor, x: str) -> str:
    """The fixed bicubic conv on the input image, then depth-to-space as PixelShuffle."""
    s2 = anchor.scale ** 2
    u = g.conv(anchor.conv, x, g.held("anchor.conv", 3 * s2, anchor.q_conv), "anchor.conv")
    return g.node("depth_to_space", [u], g.like("anchor", u, 3), blocksize=anchor.scale)


def _lower_espcn(net, g: _Builder, x: str, adq_mode: str | None) -> str:
    L = net.layers
    convs = _convs(L["conv_0"]) + _convs(L["conv_1"]) + _convs(L["upsample"])
    u = g.chain(convs, x, g.held("upsample", 3 * net.scale ** 2, net.q_image), "convs")
    return g.node("depth_to_space", [u], g.like("sr", u, 3), blocksize=net.scale)


def _lower_rfdn(net, g: _Builder, x: str, adq_mode: str | None) -> str:
    L = net.layers
    c = net.spec.channels
    h = g.node("tile", [x], g.like("repeat", x, c), times=c // 3)
    y, outs = h, []
    for k, blk in enumerate(net.blocks):
        y = _lower_rfdb(blk, g, y, f"block.{k}", c, _adq_mode(blk.adq, adq_mode))
        outs.append(y)
    cat = g.node("concat", outs, g.held("cat", c * len(outs), net.q_cat))
    y2 = g.chain([net.fuse, net.lr_conv], cat, g.held("lr_conv", c, net.q_lr), "fuse")
    y2 = g.binary("add", y2, h, g.held("long", c, net.q_long))
    u = g.chain(_convs(L["upsample"]), y2, g.held("upsample", 3 * net.scale ** 2, net.q_up), "upsample")
    up = g.node("depth_to_space", [u], g.like("shuffle", u, 3), blocksize=net.scale)
    t = g.chain(_convs(L["tail"]), up, g.held("tail", 3, net.q_tail), "tail")
    return g.binary("add", up, t, g.held("sr", 3, net.q_image))


def _lower_rfdb(blk, g: _Builder, x_in: str, p: str, c: int, mode: str | None) -> str:
    x = g.batchnorm(blk.adq, x_in, f"{p}.bn") if blk.adq else x_in
    ds = []
    for i in range(3):
        ds.append(g.chain(_convs(blk.skips[i]), x, g.held(f"{p}.d{i}", c // 2, blk.q_d[i]), f"{p}.skip.{i}"))
        b = g.chain(_convs(blk.bodies[i]), x, g.held(f"{p}.b{i}", c, blk.q_b[i]), f"{p}.body.{i}")
        x = g.binary("add", x, b, g.held(f"{p}.r{i}", c, blk.q_r[i]))
    ds.append(g.chain(_convs(blk.bodies[3]), x, g.held(f"{p}.d3", c // 2, blk.q_d[3]), f"{p}.body.3"))
    cat = g.node("concat", ds, g.held(f"{p}.cat", 2 * c, blk.q_cat))
    f = g.chain([blk.fuse], cat, g.held(f"{p}.fuse", c, blk.q_fuse), f"{p}.fuse")
    m = _lower_esa(blk.esa, g, f, f"{p}.esa", c)
    s = _static_scale(blk.adq, mode)
    if mode == "dynamic":
        d = 1.0 if blk.q_prod is not None else float(blk.adq.static_scale)  # see _lower_basic
        e = g.binary("mul", f, m, g.held(f"{p}.esa.out", c, blk.q_esa, d))
        e = g.binary("mul", e, g.adq_scale(blk.adq, x_in, f"{p}.adq_scale"), g.held(f"{p}.prod", c, blk.q_prod or blk.q_esa))
    else:
        e = g.binary("mul", f, m, g.held(f"{p}.esa.out", c, blk.q_esa), mult=s)
    return g.binary("add", e, x_in, g.held(f"{p}.out", c, blk.q_out))


def _lower_esa(esa, g: _Builder, x: str, p: str, c: int) -> str:
    f = c // 4
    c1_ = g.chain([esa.conv1], x, g.held(f"{p}.c1_", f, esa.q_c1), f"{p}.conv1")
    c1 = g.chain([esa.conv2], c1_, g.held(f"{p}.c1", f, esa.q_c2), f"{p}.conv2")
    vmax = g.node("max_pool", [c1], g.like(f"{p}.max", c1), kernel=7, stride=3)
    c3 = g.chain([esa.conv_max, esa.conv3, esa.conv3_], vmax, g.held(f"{p}.c3", f, esa.q_c3), f"{p}.conv3")
    c3u = g.node("resize", [c3, x], g.like(f"{p}.up", c3))
    cf = g.chain([esa.conv_f], c1_, g.held(f"{p}.cf", f, esa.q_cf), f"{p}.conv_f")
    s = g.binary("add", c3u, cf, g.held(f"{p}.sum", f, esa.q_sum))
    c4 = g.chain([esa.conv4], s, g.held(f"{p}.c4", c, esa.q_c4), f"{p}.conv4")
    return g.node("sigmoid", [c4], g.held(f"{p}.mask", c, esa.q_mask))


_LOWER = {"basic": _lower_basic, "espcn": _lower_espcn, "rfdn": _lower_rfdn}


def lower(model: nn.Module, adq_mode: str | None = None) -> Graph:
    """The integer graph of a calibrated model in inference mode.

    ``adq_mode``: ``static`` or ``dynamic`` to override the spec's ADQ mode (a model
    trained in static mode also tracks what dynamic mode needs: ``phi`` itself).
    """
    spec = model.spec
    if spec.space not in _LOWER:
        raise BadInput(f"the exporter cannot lower the {spec.space!r} space (it lowers {', '.join(_LOWER)})")
    if adq_mode is not None and adq_mode not in ("static", "dynamic"):
        raise BadInput(f"--adq must be static or dynamic, got {adq_mode!r}")
    model = model.eval()
    g = _Builder()
    x = g.held("image", 3, model.q_in)
    with torch.no_grad():
        out = _LOWER[spec.space](model, g, x.name, adq_mode)
    return Graph(g.tensors, g.nodes, x.name, out, spec.scale)
