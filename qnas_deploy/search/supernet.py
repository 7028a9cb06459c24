"""The QuantNAS supernet (seed 000, section III-E to III-H).

The supernet is the space's own network with every searchable layer replaced by a
:class:`MixedLayer`: one edge per (operation, bit width), importances ``alpha`` on the
simplex (a softmax over the layer's edges, eq. 7), single path. Everything else (tensor
quantizers, ADQ, ESA, pixel shuffle) is the fixed network the found architecture will
have, so the search sees the same graph that is trained and exported.

BitMixer, per operation ``o`` with edge weights ``alpha_b``:

* ``independent`` (eq. 3): one set of weights per bit width, ``sum_b alpha_b o_b(x)``;
* ``shared`` (eq. 4): one set of weights, quantized at every bit width and mixed with
  ``alpha_hat_b = alpha_b / sum_b alpha_b``, the output scaled by ``sum_b alpha_b``;
* ``san`` (eqs. 5-6, default): as shared, with quantization replaced by Gaussian noise
  ``Delta_b / 2 * z`` (``Delta_b`` the step of a ``b``-bit grid over the tensor's range);
  one ``z`` per tensor, scaled by ``sum_b alpha_hat_b Delta_b / 2``.

Bits 32 means full precision: no quantizer and no noise, so ``bits=(32,)`` is plain DNAS.

Widths (the one-shot supernet only, ``shared`` mode on a single path): a layer whose
width the space leaves free (``spaces.Slot.free_width``) holds the weights of its widest
choice, and a path of width ``w`` uses the first ``w`` output channels (and its reader the
first ``w`` input channels), as slimmable networks share them; the LSQ steps are sliced
alike. DNAS keeps the space's fixed widths.
"""
from __future__ import annotations

import torch
import torch.nn.functional as TF
from torch import nn

from ..ops import ConvDef, QConv2d, QOp, get_op
from ..quant import FLOAT_BITS, HWGQAct, LSQWeightPerChannel
from ..spaces import Slot, build_model, get_space
from ..spec import ArchSpec, LayerSpec

MODES = ("san", "shared", "independent")


def qnoise_scale(t: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """``Delta / 2`` of eq. 6: half the step of a ``bits`` grid over the tensor's range
    (per output channel for weights). Zero for full precision."""
    if bits >= FLOAT_BITS:
        return t.new_zeros(())
    t = t.detach()
    if per_channel:
        flat = t.reshape(t.shape[0], -1)
        rng = (flat.max(1).values - flat.min(1).values).reshape(-1, *([1] * (t.dim() - 1)))
    else:
        rng = t.max() - t.min()
    return rng / (2 ** bits - 1) / 2


class MixedConv(nn.Module):
    """One convolution of an operation, with shared weights for every bit width."""

    def __init__(self, cd: ConvDef, bits: tuple[int, ...], mode: str):
        super().__init__()
        self.cd, self.bits, self.mode = cd, bits, mode
        self.weight = nn.Parameter(torch.empty(cd.c_out, cd.c_in // cd.groups, *cd.kernel))
        self.bias = nn.Parameter(torch.zeros(cd.c_out))
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="relu")
        if mode == "shared":
            self.act_q = nn.ModuleList(HWGQAct(b) for b in bits)
            self.weight_q = nn.ModuleList(LSQWeightPerChannel(b, cd.c_out) for b in bits)

    def forward(self, x: torch.Tensor, ahat: torch.Tensor, bit: int | None = None,
                cd: ConvDef | None = None) -> torch.Tensor:
        """``bit``: the index of the one bit width to run (a single sampled path), else the mix.
        ``cd``: the conv at narrower channels (a width path): the leading slice of the weights."""
        c = cd or self.cd
        if self.mode == "shared" and bit is not None:
            q = self.weight_q[bit]
            if q.enabled and not bool(q.initialized):
                q.init_from(self.weight)  # every channel's step, from the widest weights
            w, b = self.weight[:c.c_out, :c.c_in // c.groups], self.bias[:c.c_out]
            return TF.conv2d(self.act_q[bit](x), q(w), b, c.stride, c.pad, c.dilation, c.groups)
        if self.mode == "shared":
            xm = sum(a * q(x) for a, q in zip(ahat, self.act_q))
            wm = sum(a * q(self.weight) for a, q in zip(ahat, self.weight_q))
        else:  # san
            xr = torch.relu(x)
            sx = sum(a * qnoise_scale(xr, b, False) for a, b in zip(ahat, self.bits))
            sw = sum(a * qnoise_scale(self.weight, b, True) for a, b in zip(ahat, self.bits))
            xm = xr + sx * torch.randn_like(xr) if self.training else xr
            wm = self.weight + sw * torch.randn_like(self.weight) if self.training else self.weight
        return TF.conv2d(xm, wm, self.bias, c.stride, c.pad, c.dilation, c.groups)


class MixedOp(nn.Module):
    def __init__(self, op: str, slot: Slot, bits: tuple[int, ...], mode: str):
        super().__init__()
        self.op = op
        self.convs = nn.ModuleList(MixedConv(cd, bits, mode) for cd in get_op(op).convs(slot.c_in, slot.c_out,
                                                                                      slot.c_mid))

    def forward(self, x: torch.Tensor, ahat: torch.Tensor, bit: int | None = None,
                dims: tuple[int, int, int] | None = None) -> torch.Tensor:
        """``dims``: ``(c_in, c_out, c_mid)`` of a width path (channel slices of the weights)."""
        cds = get_op(self.op).convs(*dims) if dims is not None else [None] * len(self.convs)
        for conv, cd in zip(self.convs, cds):
            x = conv(x, ahat, bit, cd)
        return x


class MixedLayer(nn.Module):
    """A searchable layer: ``|ops| x |bits|`` edges and their importances."""

    def __init__(self, slot: Slot, ops: tuple[str, ...], bits: tuple[int, ...], mode: str,
                 widths: tuple[int, ...] = ()):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if widths and mode != "shared":
            raise ValueError("widths are searched by the one-shot (shared) supernet only")
        self.slot, self.ops, self.bits, self.mode = slot, ops, bits, mode
        self.widths = tuple(widths)  # this layer's output width choices (a free layer; else none)
        self.alpha_logits = nn.Parameter(torch.zeros(len(ops), len(bits)))
        if mode == "independent":
            self.edges = nn.ModuleList(nn.ModuleList(QOp(op, slot.c_in, slot.c_out, slot.c_mid, b, b) for b in bits)
                                       for op in ops)
        else:
            self.edges = nn.ModuleList(MixedOp(op, slot, bits, mode) for op in ops)
        self.hw: tuple[int, int] | None = None  # input size of the last forward (for costs)
        # (operation, bits[, width]) indices of a single path (one-shot training samples one
        # per step, ``oneshot.py``); None: the alpha-weighted mix of every edge (DNAS).
        self.path: tuple[int, ...] | None = None

    def dims(self, c_in: int) -> tuple[int, int, int] | None:
        """``(c_in, c_out, c_mid)`` of the current path where the channels are not the slot's
        widest: the input narrower (the previous layer's width) or this layer's width chosen."""
        s = self.slot
        if self.widths and self.path is not None and len(self.path) > 2:
            w = self.widths[self.path[2]]
            return c_in, w, w
        return (c_in, s.c_out, s.c_mid) if c_in != s.c_in else None

    def alphas(self) -> torch.Tensor:
        """``[ops, bits]`` importances on the simplex (eq. 7)."""
        return torch.softmax(self.alpha_logits.reshape(-1), 0).reshape(self.alpha_logits.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.hw = tuple(x.shape[-2:])
        if self.path is not None:
            i, j = self.path[:2]
            if self.mode == "independent":
                return self.edges[i][j](x)
            return self.edges[i](x, None, j, self.dims(x.shape[1]))
        a = self.alphas()
        out = 0
        for i, edge in enumerate(self.edges):
            if self.mode == "independent":
                out = out + sum(a[i, j] * e(x) for j, e in enumerate(edge))
            else:
                s = a[i].sum()
                out = out + s * edge(x, a[i] / s)
        return out

    def macs(self, hw: tuple[int, int]) -> torch.Tensor:
        """``[ops]`` MACs of each operation at input size ``hw`` (searchable ops keep the size)."""
        from ..cost import conv_macs

        s = self.slot
        return torch.tensor([float(sum(conv_macs(cd.c_in, cd.c_out, cd.kernel, cd.groups, hw)
                                       for cd in get_op(op).convs(s.c_in, s.c_out, s.c_mid))) for op in self.ops])

    def choice(self) -> tuple[str, int]:
        a = self.alphas().detach()
        i, j = divmod(int(torch.argmax(a)), a.shape[1])
        return self.ops[i], self.bits[j]


def _valid_ops(space, slot: Slot, op_set: str | None) -> tuple[str, ...]:
    ops = tuple(o for o in space.ops_for(slot.role, op_set) if get_op(o).check(slot.c_in, slot.c_out, slot.c_mid) is None)
    if not ops:
        raise ValueError(f"no valid operation for layer {slot.name}")
    return ops


def _replace(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Replace every reference to ``old`` among ``root``'s submodules by ``new``."""
    for m in root.modules():
        for k, v in list(m._modules.items()):
            if v is old:
                m._modules[k] = new


class Supernet(nn.Module):
    """The space's network with :class:`MixedLayer` searchable layers."""

    def __init__(self, space: str, bits: tuple[int, ...], mode: str = "san", channels: int | None = None,
                 blocks: int | None = None, scale: int = 4, op_set: str | None = None, adq: bool = True,
                 anchor: str = "none", widths: tuple[int, ...] = ()):
        super().__init__()
        sp = get_space(space)
        channels = channels or sp.default_channels
        blocks = blocks or sp.default_blocks
        self.space, self.bits, self.mode, self.op_set = space, tuple(sorted(bits)), mode, op_set
        self.widths = tuple(sorted(widths))
        if op_set is None:
            op_set = "big" if self.bits == (FLOAT_BITS,) else "small"
            self.op_set = op_set
        if self.widths and not sp.width_choices:
            raise ValueError(f"the {space} space has no layer widths")
        free = {s.name for s in sp.layout(channels, blocks, scale) if s.free_width} if self.widths else set()
        # The widest choice of every free layer: narrower paths use leading slices of it.
        self.slots = sp.slots(channels, blocks, scale, {n: max(self.widths) for n in free})
        b0 = max(self.bits)
        template = ArchSpec(space=space, scale=scale, channels=channels, blocks=blocks,
                            layers=tuple(LayerSpec(s.name, _valid_ops(sp, s, op_set)[0], b0, b0,
                                                   max(self.widths) if s.name in free else None) for s in self.slots),
                            adq=adq and sp.has_adq, anchor=anchor)
        self.template = template
        self.net = build_model(template)
        self.mixed = nn.ModuleDict()
        for slot in self.slots:
            key = slot.name.replace(".", "_")
            layer = MixedLayer(slot, _valid_ops(sp, slot, op_set), self.bits, mode,
                               self.widths if slot.name in free else ())
            _replace(self.net, self.net.layers[key], layer)
            self.mixed[key] = layer
        if anchor != "none":  # the residual starts small, as in the space's own network
            with torch.no_grad():
                for key, f in getattr(self.net, "ANCHOR_INIT", {}).items():
                    if key in self.mixed:
                        for m in self.mixed[key].modules():
                            if isinstance(m, (MixedConv, QConv2d)):
                                m.weight.mul_(f)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def alpha_parameters(self) -> list[nn.Parameter]:
        return [m.alpha_logits for m in self.mixed.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.alpha_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def measure_sizes(self, size: tuple[int, int] = (32, 32)) -> None:
        """Record each layer's input size for an LR image of ``size`` (eq. 8's ``x_l``)."""
        was = self.training
        self.eval()
        with torch.no_grad():
            self.net(torch.zeros(1, 3, *size))
        self.train(was)
        self.edge_cost = {k: m.macs(m.hw) for k, m in self.mixed.items()}

    def derive(self, **spec_fields) -> ArchSpec:
        """The architecture of the largest alpha per layer (section III-H)."""
        layers = []
        for slot in self.slots:
            op, b = self.mixed[slot.name.replace(".", "_")].choice()
            layers.append(LayerSpec(slot.name, op, b, b))
        t = self.template
        return ArchSpec(space=t.space, scale=t.scale, channels=t.channels, blocks=t.blocks, layers=tuple(layers),
                        adq=t.adq, anchor=t.anchor, **spec_fields)
