"""Operation library keyed by the names used in found.json (QuantNAS appendix J and its code).

Every operation is a chain of convolutions, each preceded by ReLU and its activation
quantizer ("ReLU - Conv", the pre-activation layout of the QuantNAS code). An operation is
first a pure description, a list of :class:`ConvDef` for given channel counts, so that the
spec validator and the cost model can read it without building anything; :class:`QOp`
builds the quantized module from that list.

Operation families (``C_in -> ... -> C_out``; ``C`` is the space's channel count):

* ``simple_KxK``: one KxK conv; ``_grouped_3`` / ``_grouped_4``: 3 / 4 groups; ``_grouped_full``: depthwise;
  ``_d2``: dilation 2.
* ``conv_Kx1_1xK``: a Kx1 conv to ``C`` channels, then a 1xK conv (factorised; the
  QuantNAS code builds full convs, its paper calls them separable: we follow the code).
* ``growth2_KxK`` / ``growth1_KxK``: KxK to ``2C`` (``C``) channels, then KxK to ``C_out``.
* ``decenc_KxK_R``: KxK to ``C/R``, KxK ``C/R -> C/R``, KxK to ``C_out`` (encoder-decoder).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as TF
from torch import nn

from .quant import FLOAT_BITS, HWGQAct, LSQWeightPerChannel
from .quant import functional as qf


@dataclass(frozen=True)
class ConvDef:
    """One convolution of an operation: channels, kernel ``(kh, kw)``, groups, dilation."""

    c_in: int
    c_out: int
    kernel: tuple[int, int]
    groups: int = 1
    dilation: int = 1
    stride: int = 1
    padding: tuple[int, int] | None = None  # None: "same" for stride 1

    @property
    def pad(self) -> tuple[int, int]:
        if self.padding is not None:
            return self.padding
        return (self.dilation * (self.kernel[0] - 1) // 2, self.dilation * (self.kernel[1] - 1) // 2)

    def check(self) -> str | None:
        """Why this conv cannot exist, or None."""
        if self.c_in <= 0 or self.c_out <= 0:
            return f"needs positive channels, got {self.c_in} -> {self.c_out}"
        if self.c_in % self.groups or self.c_out % self.groups:
            return (f"needs channels divisible by its {self.groups} groups, "
                    f"got {self.c_in} -> {self.c_out}")
        return None


@dataclass(frozen=True)
class OpDef:
    """A named operation: ``convs(c_in, c_out, c_mid)`` lists the convolutions it is made of."""

    name: str
    convs: Callable[[int, int, int], list[ConvDef]]

    def check(self, c_in: int, c_out: int, c_mid: int) -> str | None:
        for conv in self.convs(c_in, c_out, c_mid):
            why = conv.check()
            if why:
                return f"{self.name} {why}"
        return None


OPS: dict[str, OpDef] = {}


def register(name: str, convs: Callable[[int, int, int], list[ConvDef]]) -> None:
    if name in OPS:
        raise ValueError(f"operation {name!r} is registered twice")
    OPS[name] = OpDef(name, convs)


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown operation {name!r} (choose from {', '.join(sorted(OPS))})") from None


def _simple(k: int, groups: str | int = 1, dilation: int = 1):
    def convs(c_in, c_out, c_mid):
        g = c_in if groups == "full" else groups
        return [ConvDef(c_in, c_out, (k, k), g, dilation)]
    return convs


def _factorised(k: int):
    def convs(c_in, c_out, c_mid):
        return [ConvDef(c_in, c_mid, (k, 1)), ConvDef(c_mid, c_out, (1, k))]
    return convs


def _growth(k: int, growth: int):
    def convs(c_in, c_out, c_mid):
        return [ConvDef(c_in, c_mid * growth, (k, k)), ConvDef(c_mid * growth, c_out, (k, k))]
    return convs


def _decenc(k: int, reduce: int):
    def convs(c_in, c_out, c_mid):
        r = c_mid // reduce
        return [ConvDef(c_in, r, (k, k)), ConvDef(r, r, (k, k)), ConvDef(r, c_out, (k, k))]
    return convs


for _k in (1, 3, 5):
    register(f"simple_{_k}x{_k}", _simple(_k))
    register(f"simple_{_k}x{_k}_grouped_3", _simple(_k, 3))
    register(f"growth1_{_k}x{_k}", _growth(_k, 1))
for _k in (3, 5):
    register(f"simple_{_k}x{_k}_grouped_full", _simple(_k, "full"))
    register(f"conv_{_k}x1_1x{_k}", _factorised(_k))
    register(f"growth2_{_k}x{_k}", _growth(_k, 2))
    for _r in (2, 4, 8):
        register(f"decenc_{_k}x{_k}_{_r}", _decenc(_k, _r))
# XLSR's grouped convs (4 groups; on 8-multiple channels each group fills int8 SIMD lanes).
register("simple_3x3_grouped_4", _simple(3, 4))
register("simple_1x1_grouped_4", _simple(1, 4))
register("simple_3x3_d2", _simple(3, 1, 2))
register("simple_3x3_grouped_3_d2", _simple(3, 3, 2))


class QConv2d(nn.Module):
    """ReLU + activation quantizer + convolution with quantized weights.

    The input is quantized by :class:`HWGQAct` at ``a_bits`` (unsigned, zero point 0, so
    zero padding is exact in the integer graph) and the weights by
    :class:`LSQWeightPerChannel` at ``w_bits``. The float bias becomes the runtime's int32
    bias. ``w_bits == a_bits == 32`` is a plain ReLU-conv. ``act="none"`` drops the ReLU
    and the input quantizer for inputs the caller has already quantized.
    """

    def __init__(self, conv: ConvDef, w_bits: int, a_bits: int, bias: bool = True,
                 act: str = "hwgq"):
        super().__init__()
        if act not in ("hwgq", "none"):
            raise ValueError(f"act must be 'hwgq' or 'none', got {act!r}")
        self.conv = conv
        self.w_bits, self.a_bits = w_bits, a_bits
        self.weight = nn.Parameter(torch.empty(conv.c_out, conv.c_in // conv.groups, *conv.kernel))
        self.bias = nn.Parameter(torch.zeros(conv.c_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="relu")
        # act="none": the input is already a tensor the runtime holds (quantized by the
        # caller) and is not rectified, as RFDN's ESA convs that have no ReLU in front.
        self.act_quant = HWGQAct(a_bits) if act == "hwgq" else nn.Identity()
        self.weight_quant = LSQWeightPerChannel(w_bits, conv.c_out)

    @property
    def quantized(self) -> bool:
        return self.w_bits < FLOAT_BITS and self.a_bits < FLOAT_BITS

    def input_step(self, in_scale: torch.Tensor | float | None = None) -> torch.Tensor | None:
        """Scale of the integers this conv reads: its HWGQ step, or the caller's tensor scale."""
        if isinstance(self.act_quant, HWGQAct):
            return self.act_quant.step if self.act_quant.enabled else None
        return None if in_scale is None else torch.as_tensor(in_scale)

    def bias_scale(self, in_scale=None) -> torch.Tensor | None:
        """``s_in * s_w[c]``: the step of the int32 bias the runtime adds to the accumulator."""
        s_in = self.input_step(in_scale)
        if not self.quantized or s_in is None or self.bias is None:
            return None
        return (s_in.detach() * self.weight_quant.scale.detach().reshape(-1))

    def forward(self, x: torch.Tensor, in_scale: torch.Tensor | float | None = None,
                out: nn.Module | None = None, mult: torch.Tensor | float | None = None) -> torch.Tensor:
        """The conv's output times ``mult`` (ADQ's static scale, when given).

        ``in_scale``: the scale of ``x`` when ``act="none"`` (the caller quantized it), so that
        the bias is quantized to int32 on the accumulator's grid, as the runtime stores it.
        ``out``: the quantizer that holds the output in the integer graph (the next conv's
        HWGQ or a tensor quantizer; the caller still applies it). In integer inference the
        accumulator is requantised straight onto its grid, in the runtime's one rounding.
        """
        c = self.conv
        xq = self.act_quant(x)  # first: in training this updates the step the bias grid uses
        if not self.training and self.quantized:
            s_in = self.input_step(in_scale)
            if s_in is not None:
                return self._integer_forward(xq, s_in, out, mult)
        bias = self.bias
        bs = self.bias_scale(in_scale)
        if bs is not None:
            bias = bias + (torch.round(bias / bs) * bs - bias).detach()
        y = TF.conv2d(xq, self.weight_quant(self.weight), bias, c.stride, c.pad, c.dilation, c.groups)
        return y if mult is None else y * mult

    def _integer_forward(self, xq: torch.Tensor, s_in: torch.Tensor, out: nn.Module | None,
                         mult: torch.Tensor | float | None) -> torch.Tensor:
        """Inference as the integer runtime computes it: an exact integer accumulator
        (:func:`_integer_conv`), then either requantised onto ``out``'s grid
        (``out.hold``) or, for a float consumer, scaled once by ``s_in * s_w`` in float32."""
        c = self.conv
        s_in = s_in.detach().to(xq.dtype)
        x_int = torch.round(xq / s_in)
        if not bool(self.weight_quant.initialized):
            self.weight_quant.init_from(self.weight)
        w_int = self.weight_quant.integer_weight(self.weight)
        acc = _integer_conv(x_int, w_int, c).double()
        s_w = self.weight_quant.scale.detach().reshape(-1)
        step = (s_in * s_w).to(xq.dtype)
        if self.bias is not None:
            acc = acc + torch.round(self.bias.detach() / step).double().reshape(1, -1, 1, 1)
        # A per-image ``mult`` (ADQ before its static scale is calibrated) has no runtime twin.
        if out is not None and (mult is None or torch.as_tensor(mult).numel() == 1):
            return out.hold(acc, s_in, s_w, mult).to(xq.dtype)
        return qf.scale_accumulator(acc, s_in, s_w, mult).to(xq.dtype)

    def extra_repr(self) -> str:
        c = self.conv
        return (f"{c.c_in}->{c.c_out}, k={c.kernel}, groups={c.groups}, dilation={c.dilation}, "
                f"stride={c.stride}, w_bits={self.w_bits}, a_bits={self.a_bits}")


# float32 holds every integer up to 2^24 exactly.
_FLOAT32_EXACT = 2 ** 24


def _integer_conv(x_int: torch.Tensor, w_int: torch.Tensor, c) -> torch.Tensor:
    """The exact integer accumulator of a conv of integer-valued tensors.

    In float32 when no sum can pass 2^24: every partial sum of any order is at most
    ``max|x| * max_oc sum|w[oc]|``, so each is an integer float32 holds exactly and the
    result does not depend on the kernel's summation order. CPU float32 convs run in
    oneDNN, several times faster than float64's im2col fallback, which takes the rest
    (and CUDA, whose float32 convs may round through TF32), as it does any conv a
    reduced-precision mode is set for.
    """
    full = getattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision", "none") in ("none", "ieee") \
        and getattr(torch.backends.mkldnn, "fp32_precision", "none") in ("none", "ieee")
    if x_int.device.type == "cpu" and full:
        bound = x_int.abs().amax() * w_int.abs().sum(dim=(1, 2, 3)).amax()
        if bool(bound < _FLOAT32_EXACT):
            return TF.conv2d(x_int.float(), w_int.float(), None, c.stride, c.pad, c.dilation, c.groups)
    return TF.conv2d(x_int.double(), w_int.double(), None, c.stride, c.pad, c.dilation, c.groups)


class QOp(nn.Sequential):
    """An operation of the registry built from quantized convolutions."""

    def __init__(self, op: str, c_in: int, c_out: int, c_mid: int, w_bits: int, a_bits: int):
        self.op_name = op
        super().__init__(*(QConv2d(cd, w_bits, a_bits) for cd in get_op(op).convs(c_in, c_out, c_mid)))

    def forward(self, x: torch.Tensor, out: nn.Module | None = None,
                mult: torch.Tensor | float | None = None) -> torch.Tensor:
        """``out``, ``mult``: see :func:`chain`."""
        return chain(list(self), x, out, mult)


def _input_grid(layer: nn.Module) -> nn.Module | None:
    """The activation quantizer whose grid a layer's first conv reads, if it is quantized."""
    conv = layer[0] if isinstance(layer, QOp) else layer
    if isinstance(conv, QConv2d) and conv.quantized and isinstance(conv.act_quant, HWGQAct):
        return conv.act_quant
    return None


def chain(layers: list[nn.Module], x: torch.Tensor, out: nn.Module | None = None,
          mult: torch.Tensor | float | None = None, in_scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """Layers in sequence (convs, operations, or the search's mixed layers): each conv writes
    onto the next conv's activation grid, the last one onto ``out``, times ``mult``. The
    same chain the lowering emits (``lower._Builder.chain``), so that integer inference
    requantises where the runtime does."""
    for i, m in enumerate(layers):
        last = i + 1 == len(layers)
        dst = out if last else _input_grid(layers[i + 1])
        k = mult if last else None
        if isinstance(m, QConv2d):
            x = m(x, in_scale if i == 0 else None, out=dst, mult=k)
        elif isinstance(m, QOp):
            x = m(x, out=dst, mult=k)
        else:
            x = m(x)
            if k is not None:
                x = x * k
    return x
