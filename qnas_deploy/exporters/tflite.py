"""TFLite serializer: the integer graph -> an int8 TFLite flatbuffer, written directly.

No TensorFlow and no converter: every scale and zero point in the file is the one the
integer graph holds (FACTS.md sections 3 and 4 for the operator rules). The graph is
NHWC with a fixed input size (``--input-size``); the runner resizes it for other sizes.

How the IR maps onto int8 TFLite:

* a uint8 IR grid ``(zp, qmin, qmax)`` becomes int8 by the offset ``127 - qmax``, so the
  top of every grid is the container's top. A sub-8-bit HWGQ grid (``qmin == zp == 0``)
  then becomes ``[zp', 127]``, which is exactly the clamp of a fused RELU: 4-bit and 2-bit
  activations cost nothing extra and stay in XNNPACK-delegated convs;
* ``requant`` (and a concat input on another grid) is an identity depthwise 1x1 conv
  (weight 1 at scale 1.0), because int8->int8 QUANTIZE rounds with an 8-bit fixed-point
  multiplier in XNNPACK, while a conv requantises like every other conv;
* ``depth_to_space``: TFLite reads channels in DCR order, PyTorch's PixelShuffle in CRD,
  so the producing conv's output channels are permuted (FACTS.md section 3);
  a DCR-ordered ``depth_to_space`` (the anchor's nearest upsampling) maps directly;
* ``tile`` is a 1x1 conv with one-hot weights at scale 1.0 (exact);
* a constant factor on ``mul`` goes into the declared scale of a RESHAPE'd view of its
  second input (same int8 values): LOGISTIC's output scale is fixed at 1/256;
* ``resize`` takes its size from the graph input's shape (SHAPE + STRIDED_SLICE), so the
  interpreter can be resized to any image size.

Float layers (a full-precision architecture) run as float32 ops between DEQUANTIZE and
QUANTIZE. Only the static ADQ scale is supported (``--adq dynamic`` needs a per-image
standard deviation, which int8 TFLite has no operator for).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite

from ..errors import BadInput
from .ir import Graph, Node, Tensor

OP = tflite.BuiltinOperator
TT = tflite.TensorType
ACT = tflite.ActivationFunctionType

IO = ("uint8", "int8", "float")
# IR operations with a ``_Writer`` method of the same name
LOWERED = ("conv", "requant", "add", "mul", "concat", "depth_to_space", "tile", "max_pool", "resize", "sigmoid",
           "relu", "adq_scale")
SCHEMA_VERSION = 3


def int8_grid(t: Tensor) -> tuple[int, int]:
    """(zero point, lowest value) of a uint8 IR grid in its int8 container."""
    off = 127 - t.qmax
    return t.zero_point + off, t.qmin + off


def widen(weight: np.ndarray, w_scale: np.ndarray, bias: np.ndarray):
    """Per channel, multiply the integer weights and bias by the largest power of two
    ``2^k`` that keeps the weights in [-127, 127] (and the bias in int32) and divide the
    weight scale by it.

    Every product ``q * s`` is unchanged, and so is XNNPACK's float32 requantisation
    (scaling by a power of two is exact). The builtin kernels gain: they requantise in two
    roundings (``SaturatingRoundingDoublingHighMul``, then ``RoundingDivideByPOT``), and
    a multiplier near 1 leaves the first rounding only a bit or two above the final one,
    so that about a quarter of the outputs of a 4-bit conv (or of an identity
    requantisation) land one step off the trained value. ``2^k`` more bits of first
    rounding make that ``2^k`` times rarer.
    """
    o = len(weight)
    peak = np.abs(weight.reshape(o, -1).astype(np.int64)).max(axis=1)
    k = np.zeros(o, np.int64)
    nz = peak > 0
    k[nz] = np.maximum(np.floor(np.log2(127.0 / peak[nz])), 0).astype(np.int64)  # -128 stays as it is
    big = np.abs(bias.astype(np.int64))
    over = (big << k > 2**31 - 1) & (k > 0)
    while over.any():  # a bias already at the int32 limit keeps k = 0
        k = np.where(over, k - 1, k)
        over = (big << k > 2**31 - 1) & (k > 0)
    f = np.int64(1) << k
    w = (weight.astype(np.int64) * f.reshape((o,) + (1,) * (weight.ndim - 1))).astype(np.int8)
    return w, (w_scale.astype(np.float32) / f.astype(np.float32)).astype(np.float32), \
        (bias.astype(np.int64) * f).astype(np.int32)


def densify(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's ``[C_out, C_in/g, kh, kw]`` weights as a dense conv's, zero across groups."""
    c_out, per_in = w.shape[:2]
    per_out = c_out // groups
    dense = np.zeros((c_out, per_in * groups, *w.shape[2:]), w.dtype)
    for k in range(groups):
        dense[k * per_out:(k + 1) * per_out, k * per_in:(k + 1) * per_in] = w[k * per_out:(k + 1) * per_out]
    return dense


def d2s_permutation(channels_out: int, r: int) -> np.ndarray:
    """TFLite (DCR) channel ``(i*r + j)*C + c`` takes PyTorch (CRD) channel ``c*r*r + i*r + j``."""
    return np.array([c * r * r + i * r + j for i in range(r) for j in range(r) for c in range(channels_out)])


@dataclass
class _T:
    name: str
    shape: list[int]
    dtype: int
    data: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    qdim: int = 0
    signature: list[int] | None = None


@dataclass
class _Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options: tuple[str, int, dict] | None = None  # (table name, BuiltinOptions enum, fields)


@dataclass
class _Shape:
    h: int
    w: int


@dataclass
class TfliteModel:
    tensors: list[_T] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)


class _Writer:
    def __init__(self, graph: Graph, io: str, height: int, width: int, int4: str):
        self.g, self.io, self.int4 = graph, io, int4
        self.m = TfliteModel()
        self.index: dict[str, int] = {}       # IR tensor -> TFLite tensor holding it
        self.float_view: dict[str, int] = {}  # quantized IR tensor -> its dequantized float copy
        self.relu_view: dict[str, int] = {}   # float IR tensor -> relu of it
        self.hw: dict[str, _Shape] = {}
        self.consumers: dict[str, list[Node]] = {}
        for n in graph.nodes:
            for i in n.inputs:
                self.consumers.setdefault(i, []).append(n)
        self.permute: dict[str, int] = {}     # conv output -> d2s block size (DCR order)
        for n in graph.nodes:
            if n.op == "depth_to_space" and n.attrs.get("mode", "CRD") == "CRD":
                src = n.inputs[0]
                prod = [p for p in graph.nodes if p.output == src]
                if not (prod and prod[0].op == "conv" and len(self.consumers[src]) == 1):
                    raise BadInput(f"depth_to_space input {src!r} is not a conv feeding only it; "
                                   "the TFLite exporter cannot reorder its channels")
                self.permute[src] = n.attrs["blocksize"]
        self.height, self.width = height, width
        self.size_tensor: int | None = None

    # tensors -----------------------------------------------------------------------
    def tensor(self, name, shape, dtype, data=None, scale=None, zero_point=None, qdim=0, signature=None) -> int:
        if scale is not None:
            scale = np.atleast_1d(np.asarray(scale, np.float32))
            zero_point = np.atleast_1d(np.asarray(zero_point if zero_point is not None else 0, np.int64))
        self.m.tensors.append(_T(name, [int(s) for s in shape], dtype, data, scale, zero_point, qdim, signature))
        return len(self.m.tensors) - 1

    def const(self, name, arr: np.ndarray, dtype: int, **q) -> int:
        return self.tensor(name, arr.shape, dtype, np.ascontiguousarray(arr), **q)

    def act(self, name: str, shape: _Shape) -> int:
        """The int8 (or float) TFLite tensor of IR tensor ``name``."""
        t = self.g.tensor(name)
        self.hw[name] = shape
        dims = [1, shape.h, shape.w, t.channels]
        if t.quantized:
            zp, _ = int8_grid(t)
            idx = self.tensor(name, dims, TT.INT8, scale=t.scale, zero_point=zp)
        else:
            idx = self.tensor(name, dims, TT.FLOAT32)
        self.index[name] = idx
        return idx

    def op(self, code, inputs, outputs, options=None) -> None:
        self.m.ops.append(_Op(code, list(inputs), list(outputs), options))

    def fused(self, t: Tensor) -> int:
        """The fused activation that clamps to the int8 grid of ``t``."""
        if not t.quantized:
            return ACT.NONE
        zp, lo = int8_grid(t)
        if lo == -128:
            return ACT.NONE
        if lo == zp:
            return ACT.RELU
        raise BadInput(f"tensor {t.name!r}: grid [{t.qmin}, {t.qmax}] with zero point {t.zero_point} "
                       "cannot be clamped in int8 TFLite")

    def as_float(self, name: str) -> int:
        t = self.g.tensor(name)
        if not t.quantized:
            return self.index[name]
        if name not in self.float_view:
            s = self.hw[name]
            out = self.tensor(f"{name}.float", [1, s.h, s.w, t.channels], TT.FLOAT32)
            self.op(OP.DEQUANTIZE, [self.index[name]], [out])
            self.float_view[name] = out
        return self.float_view[name]

    def relu_of(self, name: str) -> int:
        if name not in self.relu_view:
            s, t = self.hw[name], self.g.tensor(name)
            out = self.tensor(f"{name}.relu", [1, s.h, s.w, t.channels], TT.FLOAT32)
            self.op(OP.RELU, [self.as_float(name)], [out])
            self.relu_view[name] = out
        return self.relu_view[name]

    def quantize_into(self, value: int, name: str, shape: _Shape) -> None:
        out = self.act(name, shape)
        self.op(OP.QUANTIZE, [value], [out])

    # convolutions --------------------------------------------------------------------
    def _padding(self, x: int, kernel, stride, pad, dilation, name) -> tuple[int, int]:
        kh, kw = kernel
        if tuple(pad) == (0, 0):
            return x, tflite.Padding.VALID
        same = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
        if stride == 1 and tuple(pad) == same and (dilation * (kh - 1)) % 2 == 0 and (dilation * (kw - 1)) % 2 == 0:
            return x, tflite.Padding.SAME
        # Explicit zero padding: int8 PAD fills with the zero point, i.e. a real 0.
        ph, pw = pad
        t = self.m.tensors[x]
        pads = self.const(f"{name}.pads", np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32), TT.INT32)
        out = self.tensor(f"{name}.padded", [1, t.shape[1] + 2 * ph, t.shape[2] + 2 * pw, t.shape[3]], t.dtype,
                          scale=t.scale, zero_point=t.zero_point)
        self.op(OP.PAD, [x, pads], [out])
        return out, tflite.Padding.VALID

    def _conv_op(self, name, x, out, w, w_dtype, bias, w_scale, bias_scale, groups, kernel, stride, pad,
                 dilation, act):
        """Emit CONV_2D or DEPTHWISE_CONV_2D. ``w`` is [O, I/g, kh, kw] (PyTorch layout)."""
        if w_dtype == TT.INT8 and w_scale is not None:
            w, widened, bias = widen(w, w_scale, bias)
            ratio = np.divide(widened, w_scale, out=np.ones_like(widened), where=w_scale != 0)
            bias_scale, w_scale = (np.asarray(bias_scale, np.float32) * ratio).astype(np.float32), widened
        o, ig = w.shape[:2]
        c_in = ig * groups
        x, padding = self._padding(x, kernel, stride, pad, dilation, name)
        depthwise = groups == c_in and groups > 1 and o == c_in
        if depthwise:
            wt = w.reshape(o, kernel[0], kernel[1]).transpose(1, 2, 0)[None]  # [1, kh, kw, O]
            qdim = 3
        else:
            wt = w.transpose(0, 2, 3, 1)  # [O, kh, kw, I/g]
            qdim = 0
        q = {}
        if w_scale is not None:
            q = dict(scale=w_scale, zero_point=np.zeros(o, np.int64), qdim=qdim)
        if w_dtype == TT.INT4:
            data = _pack_int4(np.ascontiguousarray(wt).reshape(-1))
            wi = self.tensor(f"{name}.weight", wt.shape, TT.INT4, data, **q)
        else:
            wi = self.const(f"{name}.weight", np.ascontiguousarray(wt), w_dtype, **q)
        bq = dict(scale=bias_scale, zero_point=np.zeros(o, np.int64)) if bias_scale is not None else {}
        bi = self.const(f"{name}.bias", bias, TT.INT32 if bias.dtype == np.int32 else TT.FLOAT32, **bq)
        fields = dict(Padding=padding, StrideW=stride, StrideH=stride, FusedActivationFunction=act,
                      DilationWFactor=dilation, DilationHFactor=dilation)
        if depthwise:
            fields["DepthMultiplier"] = 1
            self.op(OP.DEPTHWISE_CONV_2D, [x, wi, bi], [out],
                    ("DepthwiseConv2DOptions", tflite.BuiltinOptions.DepthwiseConv2DOptions, fields))
        else:
            self.op(OP.CONV_2D, [x, wi, bi], [out], ("Conv2DOptions", tflite.BuiltinOptions.Conv2DOptions, fields))

    def conv(self, n: Node) -> None:
        a = n.attrs
        xt, yt = self.g.tensor(n.inputs[0]), self.g.tensor(n.output)
        shape = self.hw[n.inputs[0]]
        kh, kw = a["kernel"]
        d, s = a["dilation"], a["stride"]
        ph, pw = a["pad"]
        oshape = _Shape((shape.h + 2 * ph - d * (kh - 1) - 1) // s + 1, (shape.w + 2 * pw - d * (kw - 1) - 1) // s + 1)
        w, bias = a["weight"], a["bias"]
        perm, groups = None, a["groups"]
        if n.output in self.permute:
            perm = d2s_permutation(yt.channels // self.permute[n.output] ** 2, self.permute[n.output])
            if groups > 1:
                # Permuted output channels no longer follow their groups: run it dense.
                w, groups = densify(w, groups), 1
        take = (lambda v: v[perm]) if perm is not None else (lambda v: v)
        mult = np.float32(a["mult"])
        if not a.get("float") and xt.quantized and yt.quantized:
            w_scale = (a["w_scale"].astype(np.float32) * mult).astype(np.float32)
            y = self.act(n.output, oshape)
            w_dtype = TT.INT4 if (self.int4 == "packed" and a["w_bits"] <= 4) else TT.INT8
            self._conv_op(n.name, self.index[n.inputs[0]], y, take(w), w_dtype, take(bias).astype(np.int32),
                          take(w_scale), take((np.float32(xt.scale) * w_scale).astype(np.float32)),
                          groups, a["kernel"], s, a["pad"], d, self.fused(yt))
            return
        # A float layer (or an integer conv into a float tensor): float32 weights.
        if a.get("float"):
            wf = w.astype(np.float32) * mult
            bf = a["bias"].astype(np.float32) * mult
            x = self.relu_of(n.inputs[0]) if a.get("relu_in") else self.as_float(n.inputs[0])
        else:
            ws = (a["w_scale"].astype(np.float32) * mult).astype(np.float32)
            wf = w.astype(np.float32) * ws.reshape(-1, 1, 1, 1)
            bf = a["bias"].astype(np.float32) * np.float32(xt.scale) * ws
            x = self.as_float(n.inputs[0])
        if yt.quantized:
            tmp = self.tensor(f"{n.output}.float", [1, oshape.h, oshape.w, yt.channels], TT.FLOAT32)
            self._conv_op(n.name, x, tmp, take(wf).astype(np.float32), TT.FLOAT32, take(bf).astype(np.float32),
                          None, None, groups, a["kernel"], s, a["pad"], d, ACT.NONE)
            self.quantize_into(tmp, n.output, oshape)
        else:
            y = self.act(n.output, oshape)
            self._conv_op(n.name, x, y, take(wf).astype(np.float32), TT.FLOAT32, take(bf).astype(np.float32),
                          None, None, groups, a["kernel"], s, a["pad"], d, ACT.NONE)

    def requant_into(self, src: str, dst_idx: int, dst: Tensor, name: str) -> None:
        """Identity depthwise 1x1 conv: requantise ``src`` onto the grid of ``dst``."""
        st = self.g.tensor(src)
        c = st.channels
        self._conv_op(name, self.index[src], dst_idx, np.ones((c, 1, 1, 1), np.int8), TT.INT8,
                      np.zeros(c, np.int32), np.ones(c, np.float32), np.full(c, st.scale, np.float32),
                      c if c > 1 else 1, (1, 1), 1, (0, 0), 1, self.fused(dst))

    def requant(self, n: Node) -> None:
        xt, yt = self.g.tensor(n.inputs[0]), self.g.tensor(n.output)
        y = self.act(n.output, self.hw[n.inputs[0]])
        if xt.quantized and yt.quantized:
            self.requant_into(n.inputs[0], y, yt, n.name)
        elif yt.quantized:
            self.op(OP.QUANTIZE, [self.index[n.inputs[0]]], [y])
        else:
            self.op(OP.DEQUANTIZE, [self.index[n.inputs[0]]], [y])

    # elementwise and data movement ---------------------------------------------------
    def binary(self, n: Node, code: int, table: str, enum: int) -> None:
        a, b = n.inputs
        yt = self.g.tensor(n.output)
        shape = self.hw[a]
        mult = float(n.attrs.get("mult", 1.0))
        quant = all(self.g.tensor(i).quantized for i in (a, b)) and yt.quantized
        if quant:
            ia, ib = self.index[a], self.index[b]
            if mult != 1.0:
                if code != OP.MUL:
                    raise BadInput(f"{n.name}: a constant factor on {n.op} cannot be exported to TFLite")
                bt = self.m.tensors[ib]
                view = self.tensor(f"{b}.x{mult:.6g}", bt.shape, TT.INT8,
                                   scale=np.float32(bt.scale[0]) * np.float32(mult), zero_point=bt.zero_point)
                # The view's shape comes from SHAPE, so that it follows a resized input.
                shp = self.tensor(f"{b}.shape", [4], TT.INT32)
                self.op(OP.SHAPE, [ib], [shp], ("ShapeOptions", tflite.BuiltinOptions.ShapeOptions,
                                                dict(OutType=TT.INT32)))
                self.op(OP.RESHAPE, [ib, shp], [view])
                ib = view
            y = self.act(n.output, shape)
            self.op(code, [ia, ib], [y], (table, enum, dict(FusedActivationFunction=self.fused(yt))))
            return
        fa, fb = self.as_float(a), self.as_float(b)
        if yt.quantized or mult != 1.0:
            tmp = self.tensor(f"{n.output}.float", [1, shape.h, shape.w, yt.channels], TT.FLOAT32)
        else:
            tmp = self.act(n.output, shape)
        self.op(code, [fa, fb], [tmp], (table, enum, dict(FusedActivationFunction=ACT.NONE)))
        if mult != 1.0:
            c = self.const(f"{n.name}.mult", np.array([mult], np.float32), TT.FLOAT32)
            tmp2 = self.tensor(f"{n.output}.scaled", [1, shape.h, shape.w, yt.channels], TT.FLOAT32) \
                if yt.quantized else self.act(n.output, shape)
            self.op(OP.MUL, [tmp, c], [tmp2], ("MulOptions", tflite.BuiltinOptions.MulOptions,
                                              dict(FusedActivationFunction=ACT.NONE)))
            tmp = tmp2
        if yt.quantized:
            self.quantize_into(tmp, n.output, shape)

    def add(self, n: Node) -> None:
        self.binary(n, OP.ADD, "AddOptions", tflite.BuiltinOptions.AddOptions)

    def mul(self, n: Node) -> None:
        self.binary(n, OP.MUL, "MulOptions", tflite.BuiltinOptions.MulOptions)

    def concat(self, n: Node) -> None:
        yt = self.g.tensor(n.output)
        shape = self.hw[n.inputs[0]]
        ins = []
        for i in n.inputs:
            t = self.g.tensor(i)
            if yt.quantized and not (t.quantized and t.same_grid(yt)):
                if not t.quantized:
                    raise BadInput(f"{n.name}: a float input to a quantized concat cannot be exported to TFLite")
                view = self.tensor(f"{i}.to.{n.output}", [1, shape.h, shape.w, t.channels], TT.INT8,
                                   scale=yt.scale, zero_point=int8_grid(yt)[0])
                self.requant_into(i, view, yt, f"{i}.to.{n.output}")
                ins.append(view)
            elif not yt.quantized:
                ins.append(self.as_float(i))
            else:
                ins.append(self.index[i])
        y = self.act(n.output, shape)
        self.op(OP.CONCATENATION, ins, [y], ("ConcatenationOptions", tflite.BuiltinOptions.ConcatenationOptions,
                                             dict(Axis=3, FusedActivationFunction=ACT.NONE)))

    def depth_to_space(self, n: Node) -> None:
        r = n.attrs["blocksize"]
        s = self.hw[n.inputs[0]]
        y = self.act(n.output, _Shape(s.h * r, s.w * r))
        self.op(OP.DEPTH_TO_SPACE, [self.index[n.inputs[0]]], [y],
                ("DepthToSpaceOptions", tflite.BuiltinOptions.DepthToSpaceOptions, dict(BlockSize=r)))

    def tile(self, n: Node) -> None:
        xt, yt = self.g.tensor(n.inputs[0]), self.g.tensor(n.output)
        y = self.act(n.output, self.hw[n.inputs[0]])
        c, times = xt.channels, n.attrs["times"]
        onehot = np.zeros((c * times, c, 1, 1), np.float32)
        onehot[np.arange(c * times), np.tile(np.arange(c), times)] = 1
        if xt.quantized:
            self._conv_op(n.name, self.index[n.inputs[0]], y, onehot.astype(np.int8), TT.INT8,
                          np.zeros(c * times, np.int32), np.ones(c * times, np.float32),
                          np.full(c * times, xt.scale, np.float32), 1, (1, 1), 1, (0, 0), 1, self.fused(yt))
        else:
            self._conv_op(n.name, self.index[n.inputs[0]], y, onehot, TT.FLOAT32, np.zeros(c * times, np.float32),
                          None, None, 1, (1, 1), 1, (0, 0), 1, ACT.NONE)

    def max_pool(self, n: Node) -> None:
        k, st = n.attrs["kernel"], n.attrs["stride"]
        s = self.hw[n.inputs[0]]
        y = self.act(n.output, _Shape((s.h - k) // st + 1, (s.w - k) // st + 1))
        self.op(OP.MAX_POOL_2D, [self.index[n.inputs[0]]], [y],
                ("Pool2DOptions", tflite.BuiltinOptions.Pool2DOptions,
                 dict(Padding=tflite.Padding.VALID, StrideW=st, StrideH=st, FilterWidth=k, FilterHeight=k,
                      FusedActivationFunction=ACT.NONE)))

    def _input_size(self) -> int:
        if self.size_tensor is None:
            shp = self.tensor("input.shape", [4], TT.INT32)
            self.op(OP.SHAPE, [self.m.inputs[0]], [shp], ("ShapeOptions", tflite.BuiltinOptions.ShapeOptions,
                                                         dict(OutType=TT.INT32)))
            begin = self.const("input.hw.begin", np.array([1], np.int32), TT.INT32)
            end = self.const("input.hw.end", np.array([3], np.int32), TT.INT32)
            step = self.const("input.hw.step", np.array([1], np.int32), TT.INT32)
            self.size_tensor = self.tensor("input.hw", [2], TT.INT32)
            self.op(OP.STRIDED_SLICE, [shp, begin, end, step], [self.size_tensor],
                    ("StridedSliceOptions", tflite.BuiltinOptions.StridedSliceOptions, {}))
        return self.size_tensor

    def resize(self, n: Node) -> None:
        ref = self.hw[n.inputs[1]]
        if (ref.h, ref.w) != (self.height, self.width):
            raise BadInput(f"{n.name}: resize to a size other than the input's cannot be exported to TFLite")
        y = self.act(n.output, ref)
        self.op(OP.RESIZE_BILINEAR, [self.index[n.inputs[0]], self._input_size()], [y],
                ("ResizeBilinearOptions", tflite.BuiltinOptions.ResizeBilinearOptions,
                 dict(AlignCorners=False, HalfPixelCenters=True)))

    def sigmoid(self, n: Node) -> None:
        yt = self.g.tensor(n.output)
        if yt.quantized and (yt.scale != 1 / 256 or int8_grid(yt)[0] != -128):
            raise BadInput(f"{n.name}: int8 LOGISTIC needs the output grid 1/256 (got {yt.scale:.6g})")
        x = self.index[n.inputs[0]] if yt.quantized else self.as_float(n.inputs[0])
        self.op(OP.LOGISTIC, [x], [self.act(n.output, self.hw[n.inputs[0]])])

    def relu(self, n: Node) -> None:
        y = self.act(n.output, self.hw[n.inputs[0]])
        self.op(OP.RELU, [self.as_float(n.inputs[0])], [y])

    def adq_scale(self, n: Node) -> None:
        raise BadInput("--adq dynamic cannot be exported to TFLite (int8 TFLite has no per-image standard "
                       "deviation); export with --adq static")

    # the whole graph -----------------------------------------------------------------
    def build(self, metadata: dict[str, str]) -> TfliteModel:
        g = self.g
        it = g.tensor(g.input)
        shape = _Shape(self.height, self.width)
        sig = [1, -1, -1, it.channels]
        dims = [1, self.height, self.width, it.channels]
        in_grid = dict(scale=np.float32(1 / 255), zero_point=0)
        if self.io == "uint8":
            x = self.tensor("input", dims, TT.UINT8, signature=sig, **in_grid)
        elif self.io == "int8":
            x = self.tensor("input", dims, TT.INT8, signature=sig, scale=np.float32(1 / 255), zero_point=-128)
        else:
            x = self.tensor("input", dims, TT.FLOAT32, signature=sig)
        self.m.inputs = [x]
        if it.quantized:
            if (it.scale, it.zero_point, it.qmin, it.qmax) != (float(np.float32(1 / 255)), 0, 0, 255):
                raise BadInput("the graph's input grid is not the 8-bit image grid 1/255")
            if self.io == "int8":
                self.index[g.input] = x
                self.hw[g.input] = shape
            else:
                self.op(OP.QUANTIZE, [x], [self.act(g.input, shape)])
        else:
            if self.io == "float":
                self.index[g.input] = x
                self.hw[g.input] = shape
            else:
                self.op(OP.DEQUANTIZE, [x], [self.act(g.input, shape)])
        for n in g.nodes:
            if n.op not in LOWERED:
                raise BadInput(f"the TFLite exporter cannot lower operation {n.op!r} ({n.name})")
            getattr(self, n.op)(n)
        ot = g.tensor(g.output)
        y, s = self.index[g.output], self.hw[g.output]
        odims = [1, s.h, s.w, ot.channels]
        osig = [1, -1, -1, ot.channels]
        if ot.quantized:
            if (ot.scale, ot.zero_point, ot.qmin, ot.qmax) != (float(np.float32(1 / 255)), 0, 0, 255):
                raise BadInput("the graph's output grid is not the 8-bit image grid 1/255")
            if self.io == "int8":
                out = y
                self.m.tensors[y].signature = osig
            elif self.io == "uint8":
                out = self.tensor("output", odims, TT.UINT8, scale=np.float32(1 / 255), zero_point=0, signature=osig)
                self.op(OP.QUANTIZE, [y], [out])
            else:
                out = self.tensor("output", odims, TT.FLOAT32, signature=osig)
                self.op(OP.DEQUANTIZE, [y], [out])
        else:
            if self.io == "float":
                out = y
                self.m.tensors[y].signature = osig
            else:
                q = dict(scale=np.float32(1 / 255), zero_point=0 if self.io == "uint8" else -128)
                out = self.tensor("output", odims, TT.UINT8 if self.io == "uint8" else TT.INT8, signature=osig, **q)
                self.op(OP.QUANTIZE, [y], [out])
        self.m.outputs = [out]
        self.m.metadata = {k: v.encode() for k, v in metadata.items()}
        return self.m


def _pack_int4(v: np.ndarray) -> np.ndarray:
    """Two signed 4-bit values per byte, low nibble first (TFLite's INT4 layout)."""
    v = v.astype(np.int8)
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, np.int8)])
    lo, hi = v[0::2].astype(np.uint8) & 0x0F, v[1::2].astype(np.uint8) & 0x0F
    return (lo | (hi << 4)).astype(np.uint8)


# serialization -------------------------------------------------------------------------

def _bytes(b: flatbuffers.Builder, data: bytes, align: int = 16) -> int:
    b.StartVector(1, len(data), align)
    b.head = b.head - len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def serialize(m: TfliteModel, description: str = "qnas-deploy") -> bytes:
    b = flatbuffers.Builder(1 << 20)
    # buffers: 0 is the empty sentinel, then one per constant tensor, then metadata.
    buffer_data: list[bytes | None] = [None]
    tensor_buffer = []
    for t in m.tensors:
        if t.data is None:
            tensor_buffer.append(0)
        else:
            buffer_data.append(np.ascontiguousarray(t.data).tobytes())
            tensor_buffer.append(len(buffer_data) - 1)
    meta_buffer = {}
    for k, v in m.metadata.items():
        buffer_data.append(v)
        meta_buffer[k] = len(buffer_data) - 1
    data_offsets = [(_bytes(b, d) if d is not None else None) for d in buffer_data]
    buffers = []
    for off in data_offsets:
        tflite.BufferStart(b)
        if off is not None:
            tflite.BufferAddData(b, off)
        buffers.append(tflite.BufferEnd(b))

    tensor_offsets = []
    for t, buf in zip(m.tensors, tensor_buffer):
        name = b.CreateString(t.name)
        shape = b.CreateNumpyVector(np.array(t.shape, np.int32))
        sig = b.CreateNumpyVector(np.array(t.signature, np.int32)) if t.signature else None
        quant = None
        if t.scale is not None:
            sc = b.CreateNumpyVector(t.scale.astype(np.float32))
            zp = b.CreateNumpyVector(t.zero_point.astype(np.int64))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, sc)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.qdim)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        if sig is not None:
            tflite.TensorAddShapeSignature(b, sig)
        tflite.TensorAddType(b, t.dtype)
        tflite.TensorAddBuffer(b, buf)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        tensor_offsets.append(tflite.TensorEnd(b))

    codes = sorted({op.code for op in m.ops})
    code_index = {c: i for i, c in enumerate(codes)}
    op_offsets = []
    for op in m.ops:
        ins = b.CreateNumpyVector(np.array(op.inputs, np.int32))
        outs = b.CreateNumpyVector(np.array(op.outputs, np.int32))
        opts = None
        if op.options is not None:
            table, _, fields = op.options
            getattr(tflite, f"{table}Start")(b)
            for k, v in fields.items():
                getattr(tflite, f"{table}Add{k}")(b, v)
            opts = getattr(tflite, f"{table}End")(b)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, code_index[op.code])
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if opts is not None:
            tflite.OperatorAddBuiltinOptionsType(b, op.options[1])
            tflite.OperatorAddBuiltinOptions(b, opts)
        op_offsets.append(tflite.OperatorEnd(b))

    def table_vector(start, offsets):
        start(b, len(offsets))
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    tensors_v = table_vector(tflite.SubGraphStartTensorsVector, tensor_offsets)
    ops_v = table_vector(tflite.SubGraphStartOperatorsVector, op_offsets)
    in_v = b.CreateNumpyVector(np.array(m.inputs, np.int32))
    out_v = b.CreateNumpyVector(np.array(m.outputs, np.int32))
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_v)
    tflite.SubGraphAddInputs(b, in_v)
    tflite.SubGraphAddOutputs(b, out_v)
    tflite.SubGraphAddOperators(b, ops_v)
    tflite.SubGraphAddName(b, sg_name)
    subgraph = tflite.SubGraphEnd(b)

    code_offsets = []
    for c in codes:
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(c, 127))
        tflite.OperatorCodeAddBuiltinCode(b, c)
        tflite.OperatorCodeAddVersion(b, 1)
        code_offsets.append(tflite.OperatorCodeEnd(b))

    meta_offsets = []
    for k, idx in meta_buffer.items():
        name = b.CreateString(k)
        tflite.MetadataStart(b)
        tflite.MetadataAddName(b, name)
        tflite.MetadataAddBuffer(b, idx)
        meta_offsets.append(tflite.MetadataEnd(b))

    codes_v = table_vector(tflite.ModelStartOperatorCodesVector, code_offsets)
    subgraphs_v = table_vector(tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_v = table_vector(tflite.ModelStartBuffersVector, buffers)
    meta_v = table_vector(tflite.ModelStartMetadataVector, meta_offsets)
    desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, SCHEMA_VERSION)
    tflite.ModelAddOperatorCodes(b, codes_v)
    tflite.ModelAddSubgraphs(b, subgraphs_v)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, buffers_v)
    tflite.ModelAddMetadata(b, meta_v)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def to_tflite(graph: Graph, io: str = "uint8", input_size: tuple[int, int] = (128, 128), int4: str = "container",
              metadata: dict | None = None) -> bytes:
    """The TFLite flatbuffer of ``graph`` (NHWC, batch 1, ``input_size`` = (H, W) of the LR image)."""
    if io not in IO:
        raise BadInput(f"--io must be one of {', '.join(IO)} for TFLite, got {io!r}")
    if int4 not in ("container", "packed"):
        raise BadInput(f"--int4 must be container or packed, got {int4!r}")
    h, w = input_size
    if h < 1 or w < 1:
        raise BadInput(f"--input-size must be positive, got {h}x{w}")
    meta = {"qnas.scale": str(graph.scale), "qnas.io": io, "qnas.input_size": f"{h}x{w}"}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    for k, v in graph.metadata.items():
        meta.setdefault(k, v)
    model = _Writer(graph, io, h, w, int4).build(meta)
    return serialize(model)


def read_metadata(data: bytes) -> dict[str, str]:
    """The metadata entries of a TFLite flatbuffer (name -> UTF-8 text)."""
    m = tflite.Model.GetRootAsModel(data, 0)
    out = {}
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        buf = m.Buffers(md.Buffer())
        out[md.Name().decode()] = buf.DataAsNumpy().tobytes().decode("utf-8", "replace") if buf.DataLength() else ""
    return out
