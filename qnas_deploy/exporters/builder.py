"""The public graph builder: what a space's ``lower`` hook writes its network with.

Folding happens here, once, and mirrors the fake-quant model exactly:

* every conv gets its LSQ integers, per-channel steps and its int32 bias on the
  ``s_in * s_w`` grid the model already trains with (``QConv2d.bias_scale``);
* a conv that feeds only the next conv of a chain requantises straight onto that conv's
  HWGQ grid (zero point 0, ``2^b - 1`` levels), as the fake-quant model does
  (``ops.chain``);
* ADQ's BatchNorm becomes a depthwise 1x1 integer conv (one weight ``+-127`` per
  channel, exact); it cannot merge into the next conv because a ReLU and a quantizer sit
  in between, and as its own conv it is exact on zero-padded borders too;
* the static ADQ scale multiplies the output scale of the branches' last convs (exactly
  where the model multiplies), the dynamic one stays a small float subgraph.
"""
from __future__ import annotations

import numpy as np
import torch

from ..adq import ADQ
from ..errors import BadInput
from ..ops import QConv2d
from ..quant import HWGQAct, Uint8AffineTensor, int_range
from . import ir
from .ir import Graph, Node, Tensor


def conv_integers(conv: QConv2d, x_scale: float, rows: slice = slice(None)) -> tuple[np.ndarray, ...]:
    """A quantized conv reading a tensor of scale ``x_scale`` as the runtime holds it: int8
    weights, float32 weight scales and the int32 bias on the ``s_in * s_w`` grid (of the
    output channels ``rows``)."""
    scale = conv.weight_quant.scale.detach().reshape(-1)[rows]
    if conv.bias is not None:
        bs = conv.bias_scale(x_scale if not isinstance(conv.act_quant, HWGQAct) else None)[rows]
        bias = torch.round(conv.bias.detach()[rows] / bs).numpy().astype(np.int64)
    else:
        bias = np.zeros(len(scale), np.int64)
    return (conv.weight_quant.integer_weight(conv.weight.detach()[rows], rows).numpy().astype(np.int8),
            scale.numpy().astype(np.float32), bias.astype(np.int32))


class GraphBuilder:
    def __init__(self):
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.holders: dict[str, Uint8AffineTensor] = {}  # tensor -> the model's quantizer that holds it
        self.convs: dict[str, QConv2d] = {}  # a conv node's output -> the model's conv it lowers

    def graph(self, x: str, out: str, scale: int) -> Graph:
        return Graph(self.tensors, self.nodes, x, out, scale)

    # tensors -----------------------------------------------------------------------
    def add_tensor(self, t: Tensor) -> Tensor:
        """Register ``t`` under a fresh name (its own, or with ``_2``, ``_3`` appended)."""
        base, k = t.name, 1
        while t.name in self.tensors:
            k += 1
            t.name = f"{base}_{k}"
        self.tensors[t.name] = t
        return t

    def held(self, name: str, channels: int, q: Uint8AffineTensor, divide_scale_by: float = 1.0) -> Tensor:
        """The tensor a model's tensor quantizer ``q`` holds (float when ``q`` is off)."""
        if not q.enabled:
            return self.add_tensor(Tensor(name, channels))
        if divide_scale_by != 1.0:
            scale = float(np.float32(float(q.scale) / divide_scale_by))
            return self.add_tensor(Tensor(name, channels, scale, q.zero_point, q.qmin, q.qmax))
        t = self.add_tensor(Tensor(name, channels, float(q.scale), q.zero_point, q.qmin, q.qmax))
        self.holders[t.name] = q
        return t

    def grid_of(self, conv: QConv2d, name: str) -> Tensor:
        """The HWGQ activation grid ``conv`` reads its input on."""
        act = conv.act_quant
        if isinstance(act, HWGQAct) and act.enabled:
            return self.add_tensor(Tensor(name, conv.conv.c_in, float(act.step), 0, *int_range(act.bits, signed=False)))
        return self.add_tensor(Tensor(name, conv.conv.c_in))

    def like(self, name: str, src: str, channels: int | None = None) -> Tensor:
        s = self.tensors[src]
        return self.add_tensor(Tensor(name, channels or s.channels, s.scale, s.zero_point, s.qmin, s.qmax))

    def node(self, attrs: ir.Attrs, inputs: list[str], out: Tensor, name: str = "") -> str:
        self.nodes.append(Node(attrs.op, list(inputs), out.name, attrs, name or out.name))
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
                    cur = self.node(ir.Requant(), [cur], grid)
            if i + 1 < len(convs):
                nxt = convs[i + 1]
                dst = self.grid_of(nxt, f"{name}.{i + 1}.in") if nxt.quantized else \
                    self.add_tensor(Tensor(f"{name}.{i}.out", conv.conv.c_out))
            else:
                dst = out
            self.conv(conv, cur, dst, f"{name}.{i}", mult if i + 1 == len(convs) else 1.0,
                      relu_in=hwgq and (not conv.quantized))
            cur = dst.name
        return cur

    def conv(self, conv: QConv2d, x: str, out: Tensor, name: str, mult: float = 1.0, relu_in: bool = False) -> str:
        c = conv.conv
        geometry = dict(stride=c.stride, pad=tuple(c.pad), dilation=c.dilation, groups=c.groups,
                        kernel=tuple(c.kernel), mult=float(np.float32(mult)))
        xt = self.tensors[x]
        if conv.quantized and xt.quantized:
            weight, w_scale, bias = conv_integers(conv, xt.scale)
            attrs = ir.Conv(weight=weight, w_scale=w_scale, bias=bias, w_bits=conv.w_bits, **geometry)
        else:
            w = conv.weight.detach()
            wq = conv.weight_quant(w) if conv.weight_quant.enabled else w
            b = conv.bias.detach() if conv.bias is not None else torch.zeros(c.c_out)
            attrs = ir.FloatConv(weight=wq.detach().numpy().astype(np.float32), bias=b.numpy().astype(np.float32),
                                 relu_in=relu_in, **geometry)
        y = self.node(attrs, [x], out, name)
        self.convs[y] = conv
        return y

    def batchnorm(self, adq: ADQ, x: str, name: str) -> str:
        """ADQ's inference-mode BN as a depthwise 1x1 conv, exactly as ``ADQ.normalize``."""
        xt = self.tensors[x]
        out = self.held(name, xt.channels, adq.bn_quant)
        alpha, beta = adq.folded()
        cin = xt.channels
        geometry = dict(stride=1, pad=(0, 0), dilation=1, groups=cin, kernel=(1, 1))
        if xt.quantized and out.quantized:
            ws = ADQ.weight_scale(alpha)
            step = torch.as_tensor(xt.scale, dtype=torch.float32) * ws
            sign = torch.where(alpha < 0, -1, 1)
            attrs = ir.Conv(weight=(127 * sign).numpy().astype(np.int8).reshape(cin, 1, 1, 1),
                            w_scale=ws.numpy().astype(np.float32), w_bits=8,
                            bias=torch.round(beta / step).numpy().astype(np.int32), **geometry)
        else:
            attrs = ir.FloatConv(weight=alpha.numpy().astype(np.float32).reshape(cin, 1, 1, 1),
                                 bias=beta.numpy().astype(np.float32), **geometry)
        return self.node(attrs, [x], out, name)

    def add(self, a: str, b: str, out: Tensor, mult: float = 1.0) -> str:
        return self.node(ir.Add(mult=float(np.float32(mult))), [a, b], out)

    def mul(self, a: str, b: str, out: Tensor, mult: float = 1.0) -> str:
        return self.node(ir.Mul(mult=float(np.float32(mult))), [a, b], out)

    def adq_scale(self, adq: ADQ, x: str, name: str) -> str:
        """The per-image ``phi(std(x))`` of dynamic ADQ (a float tensor ``[N, 1, 1, 1]``)."""
        return self.node(ir.AdqScale(a=float(adq.phi_a), c=float(adq.phi_c)), [x], self.add_tensor(Tensor(name, 1)))

    def depth_to_space(self, x: str, name: str, blocksize: int, mode: str = "CRD", channels: int = 3) -> str:
        return self.node(ir.DepthToSpace(blocksize=blocksize, mode=mode), [x], self.like(name, x, channels))

    def pad(self, x: str, name: str, pads: tuple[int, int]) -> str:
        return self.node(ir.Pad(pads=tuple(pads)), [x], self.like(name, x))

    def tile(self, x: str, name: str, times: int) -> str:
        return self.node(ir.Tile(times=times), [x], self.like(name, x, self.tensors[x].channels * times))


class AdqLowering:
    """How a residual block's ADQ lowers: its mode, and the static scale or dynamic parts.

    A block trained in static mode has grids measured on the scaled branches; exported in
    dynamic mode, the unscaled branches' grids are those divided by the calibrated scale,
    and the product goes onto the grid of the scaled result (its range is the same on
    average)."""

    def __init__(self, adq: ADQ | None, q_prod, override: str | None):
        self.adq = adq
        self.mode = (override or adq.mode) if adq is not None else None
        self.dynamic = self.mode == "dynamic"
        self.divisor = float(adq.static_scale) if self.dynamic and q_prod is None else 1.0
        self.q_prod = q_prod

    def static_scale(self) -> float:
        """The constant the branches' last convs fold in (1 without static ADQ)."""
        if self.adq is None or self.mode != "static":
            return 1.0
        s = float(self.adq.static_scale)
        if not s > 0:
            raise BadInput(f"ADQ static scale is {s:.4g} (not positive); export with --adq dynamic")
        return s

    def scale_by_std(self, g: GraphBuilder, r: str, x: str, p: str, channels: int, q_fallback) -> str:
        """Dynamic mode: ``r * phi(std(x))`` onto the product's grid."""
        return g.mul(r, g.adq_scale(self.adq, x, f"{p}.adq_scale"), g.held(f"{p}.prod", channels, self.q_prod or q_fallback))


def lower_model(model, adq_mode: str | None = None, holders: dict | None = None, convs: dict | None = None) -> Graph:
    """The canonical integer graph of a calibrated model in inference mode, written by its
    space's ``lower`` hook. ``adq_mode``: ``static`` or ``dynamic`` overrides the spec's ADQ
    mode (a model trained in static mode also tracks what dynamic mode needs). ``holders``,
    when given, receives each tensor's quantizer in the model (:mod:`.add_scales`); ``convs``
    each quantized conv's module by its output tensor (:mod:`.conv_scales`)."""
    from ..spaces import get_space

    spec = model.spec
    space = get_space(spec.space)
    if space.lower is None:
        raise BadInput(f"the exporter cannot lower the {spec.space!r} space (it has no lower hook)")
    if adq_mode is not None and adq_mode not in ("static", "dynamic"):
        raise BadInput(f"--adq must be static or dynamic, got {adq_mode!r}")
    model = model.eval()
    g = GraphBuilder()
    x = g.held("image", 3, model.q_in)
    with torch.no_grad():
        out = space.lower(model, g, x.name, adq_mode)
    if holders is not None:
        holders.update(g.holders)
    if convs is not None:
        convs.update(g.convs)
    return g.graph(x.name, out, spec.scale)
