"""TFLite serializer: a LiteRT-lowered integer graph -> an int8 TFLite flatbuffer.

No TensorFlow and no converter: every scale and zero point in the file is the one the
graph holds (FACTS.md sections 3 and 4), each IR operation becomes its TFLite operator;
the target's passes (``targets.LITERT``) have made the graph what int8 TFLite takes. NHWC,
a fixed input size (``--input-size``) that the runner resizes. A uint8 IR grid becomes int8
by the offset ``127 - qmax``, so a sub-8-bit HWGQ grid (``qmin == zp == 0``) is exactly the
clamp of a fused RELU; ``reinterpret`` is a RESHAPE onto a tensor declared on another grid
(its shape from SHAPE, so that it follows a resized input), and so is ``crop``'s size;
explicit zero padding is a PAD (int8 PAD fills with the zero point). Float layers run as
float32 ops between DEQUANTIZE and QUANTIZE; ``adq_scale`` (dynamic ADQ) has no int8 op.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import tflite

from . import ir
from .ir import Graph, Node, Tensor
from .tflite_flatbuffer import FbBuilder, TfliteModel, serialize, options as _options

OP = tflite.BuiltinOperator
TT = tflite.TensorType
ACT = tflite.ActivationFunctionType
OWNER = "the TFLite serializer"


def int8_grid(t: Tensor) -> tuple[int, int]:
    """(zero point, lowest value) of a uint8 IR grid in its int8 container."""
    off = 127 - t.qmax
    return t.zero_point + off, t.qmin + off


@dataclass
class _Shape:
    h: int
    w: int


class _Writer(FbBuilder):
    def __init__(self, graph: Graph, io: str, height: int, width: int):
        super().__init__()
        self.g, self.io = graph, io
        self.index: dict[str, int] = {}       # IR tensor -> TFLite tensor holding it
        self.float_view: dict[str, int] = {}  # quantized IR tensor -> its dequantized float copy
        self.relu_view: dict[str, int] = {}   # float IR tensor -> relu of it
        self.hw: dict[str, _Shape] = {}
        self.height, self.width = height, width

    # tensors -----------------------------------------------------------------------
    def act(self, name: str, shape: _Shape) -> int:
        """The int8 (or float) TFLite tensor of IR tensor ``name``."""
        t = self.g.tensor(name)
        self.hw[name] = shape
        dims = [1, shape.h, shape.w, t.channels]
        if t.quantized:
            idx = self.tensor(name, dims, TT.INT8, scale=t.scale, zero_point=int8_grid(t)[0])
        else:
            idx = self.tensor(name, dims, TT.FLOAT32)
        self.index[name] = idx
        return idx

    def fused(self, t: Tensor) -> int:
        """The fused activation that clamps to the int8 grid of ``t``."""
        if not t.quantized:
            return ACT.NONE
        zp, lo = int8_grid(t)
        if lo == -128:
            return ACT.NONE
        if lo == zp:
            return ACT.RELU
        raise ir.UnsupportedOp(f"tensor {t.name!r}: grid [{t.qmin}, {t.qmax}] with zero point {t.zero_point} "
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

    def float_out(self, n: Node, shape: _Shape) -> int:
        """Where a float op writes: the output itself, or a float tensor QUANTIZE'd into it."""
        yt = self.g.tensor(n.output)
        if not yt.quantized:
            return self.act(n.output, shape)
        return self.tensor(f"{n.output}.float", [1, shape.h, shape.w, yt.channels], TT.FLOAT32)

    def quantize_into(self, value: int, name: str, shape: _Shape) -> None:
        if self.g.tensor(name).quantized:
            self.op(OP.QUANTIZE, [value], [self.act(name, shape)])

    # convolutions --------------------------------------------------------------------
    def _padded(self, x: int, a, name) -> tuple[int, int]:
        kh, kw = a.kernel
        d = a.dilation
        if tuple(a.pad) == (0, 0):
            return x, tflite.Padding.VALID
        same = (d * (kh - 1) // 2, d * (kw - 1) // 2)
        if a.stride == 1 and tuple(a.pad) == same and (d * (kh - 1)) % 2 == 0 and (d * (kw - 1)) % 2 == 0:
            return x, tflite.Padding.SAME
        ph, pw = a.pad
        t = self.m.tensors[x]
        pads = self.const(f"{name}.pads", np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32), TT.INT32)
        out = self.tensor(f"{name}.padded", [1, t.shape[1] + 2 * ph, t.shape[2] + 2 * pw, t.shape[3]], t.dtype,
                          scale=t.scale, zero_point=t.zero_point)
        self.op(OP.PAD, [x, pads], [out])
        return out, tflite.Padding.VALID

    def _out_shape(self, n: Node) -> _Shape:
        a, s = n.attrs, self.hw[n.inputs[0]]
        (kh, kw), d, st, (ph, pw) = a.kernel, a.dilation, a.stride, a.pad
        return _Shape((s.h + 2 * ph - d * (kh - 1) - 1) // st + 1, (s.w + 2 * pw - d * (kw - 1) - 1) // st + 1)

    def _conv_op(self, n: Node, x: int, out: int, w, w_dtype, bias, w_scale, bias_scale, act) -> None:
        a = n.attrs
        x, padding = self._padded(x, a, n.name)
        self.conv2d(n.name, x, out, w, w_dtype, bias, w_scale, bias_scale, a.depthwise(w.shape[1] * a.groups),
                    dict(Padding=padding, StrideW=a.stride, StrideH=a.stride, FusedActivationFunction=act,
                         DilationWFactor=a.dilation, DilationHFactor=a.dilation))

    def conv(self, n: Node) -> None:
        a = n.attrs
        xt, yt = self.g.tensor(n.inputs[0]), self.g.tensor(n.output)
        oshape = self._out_shape(n)
        w_scale = a.scaled_w_scale()
        if yt.quantized:
            y = self.act(n.output, oshape)
            self._conv_op(n, self.index[n.inputs[0]], y, a.weight, TT.INT4 if a.storage == "int4" else TT.INT8,
                          a.bias_or_zeros().astype(np.int32), w_scale,
                          (np.float32(xt.scale) * w_scale).astype(np.float32), self.fused(yt))
            return
        # An integer conv into a float tensor: its float32 equivalent.
        wf = a.weight.astype(np.float32) * w_scale.reshape(-1, 1, 1, 1)
        bf = a.bias_or_zeros().astype(np.float32) * np.float32(xt.scale) * w_scale
        self._float_conv(n, self.as_float(n.inputs[0]), wf, bf, oshape)

    def float_conv(self, n: Node) -> None:
        a = n.attrs
        x = self.relu_of(n.inputs[0]) if a.relu_in else self.as_float(n.inputs[0])
        mult = np.float32(a.mult)
        self._float_conv(n, x, a.weight.astype(np.float32) * mult, a.bias.astype(np.float32) * mult,
                         self._out_shape(n))

    def _float_conv(self, n: Node, x: int, wf, bf, oshape: _Shape) -> None:
        y = self.float_out(n, oshape)
        self._conv_op(n, x, y, wf.astype(np.float32), TT.FLOAT32, bf.astype(np.float32), None, None, ACT.NONE)
        self.quantize_into(y, n.output, oshape)

    def requant(self, n: Node) -> None:
        """Into or out of a float tensor (between two grids it is a conv: ``passes/requant_as_conv.py``)."""
        xt, yt = self.g.tensor(n.inputs[0]), self.g.tensor(n.output)
        if xt.quantized and yt.quantized:
            ir.refuse(OWNER, n, "lower it for a LiteRT target (requant_as_conv)")
        y = self.act(n.output, self.hw[n.inputs[0]])
        self.op(OP.QUANTIZE if yt.quantized else OP.DEQUANTIZE, [self.index[n.inputs[0]]], [y])

    # elementwise and data movement ---------------------------------------------------
    def binary(self, n: Node) -> None:
        code, table = (OP.ADD, "AddOptions") if n.op == "add" else (OP.MUL, "MulOptions")
        a, b = n.inputs
        yt = self.g.tensor(n.output)
        shape, mult = self.hw[a], float(n.attrs.mult)
        if all(self.g.tensor(i).quantized for i in (a, b)) and yt.quantized:
            if mult != 1.0:
                ir.refuse(OWNER, n, "a constant factor on a quantized add or mul (mult_as_view lowers a mul's)")
            y = self.act(n.output, shape)
            self.op(code, [self.index[a], self.index[b]], [y], _options(table, FusedActivationFunction=self.fused(yt)))
            return
        fa, fb = self.as_float(a), self.as_float(b)
        tmp = self.float_out(n, shape) if mult == 1.0 else \
            self.tensor(f"{n.output}.float", [1, shape.h, shape.w, yt.channels], TT.FLOAT32)
        self.op(code, [fa, fb], [tmp], _options(table, FusedActivationFunction=ACT.NONE))
        if mult != 1.0:
            c = self.const(f"{n.name}.mult", np.array([mult], np.float32), TT.FLOAT32)
            tmp2 = self.tensor(f"{n.output}.scaled", [1, shape.h, shape.w, yt.channels], TT.FLOAT32) \
                if yt.quantized else self.act(n.output, shape)
            self.op(OP.MUL, [tmp, c], [tmp2], _options("MulOptions", FusedActivationFunction=ACT.NONE))
            tmp = tmp2
        self.quantize_into(tmp, n.output, shape)

    def reinterpret(self, n: Node) -> None:
        src = self.index[n.inputs[0]]
        view = self.act(n.output, self.hw[n.inputs[0]])
        shp = self.tensor(f"{n.inputs[0]}.shape", [4], TT.INT32)
        self.op(OP.SHAPE, [src], [shp], _options("ShapeOptions", OutType=TT.INT32))
        self.op(OP.RESHAPE, [src, shp], [view])

    def concat(self, n: Node) -> None:
        yt = self.g.tensor(n.output)
        ins = [self.index[i] if yt.quantized else self.as_float(i) for i in n.inputs]
        y = self.act(n.output, self.hw[n.inputs[0]])
        self.op(OP.CONCATENATION, ins, [y], _options("ConcatenationOptions", Axis=3, FusedActivationFunction=ACT.NONE))

    def depth_to_space(self, n: Node) -> None:
        if n.attrs.mode != "DCR":
            ir.refuse(OWNER, n, "TFLite's DEPTH_TO_SPACE is DCR only (crd_to_dcr lowers PixelShuffle's order)")
        r, s = n.attrs.blocksize, self.hw[n.inputs[0]]
        y = self.act(n.output, _Shape(s.h * r, s.w * r))
        self.op(OP.DEPTH_TO_SPACE, [self.index[n.inputs[0]]], [y], _options("DepthToSpaceOptions", BlockSize=r))

    def pad(self, n: Node) -> None:
        (ph, pw), s = n.attrs.pads, self.hw[n.inputs[0]]
        pads = self.const(f"{n.name}.pads", np.array([[0, 0], [ph, ph], [pw, pw], [0, 0]], np.int32), TT.INT32)
        y = self.act(n.output, _Shape(s.h + 2 * ph, s.w + 2 * pw))
        self.op(OP.MIRROR_PAD, [self.index[n.inputs[0]], pads], [y],
                _options("MirrorPadOptions", Mode=tflite.MirrorPadMode.SYMMETRIC))

    def max_pool(self, n: Node) -> None:
        (k, st), s = (n.attrs.kernel, n.attrs.stride), self.hw[n.inputs[0]]
        y = self.act(n.output, _Shape((s.h - k) // st + 1, (s.w - k) // st + 1))
        self.op(OP.MAX_POOL_2D, [self.index[n.inputs[0]]], [y],
                _options("Pool2DOptions", Padding=tflite.Padding.VALID, StrideW=st, StrideH=st, FilterWidth=k,
                         FilterHeight=k, FusedActivationFunction=ACT.NONE))

    def crop(self, n: Node) -> None:
        ref = self.hw[n.inputs[1]]
        if (ref.h, ref.w) != (self.height, self.width):
            ir.refuse(OWNER, n, "a crop to a size other than the input's")
        y = self.act(n.output, ref)
        begin, step = (self.const(f"{n.name}.{k}", np.full(4, v, np.int32), TT.INT32) for k, v in (("begin", 0), ("step", 1)))
        self.op(OP.STRIDED_SLICE, [self.index[n.inputs[0]], begin, self.slice_end(), step], [y],
                _options("StridedSliceOptions", EndMask=0b1001))

    def sigmoid(self, n: Node) -> None:
        yt = self.g.tensor(n.output)
        if yt.quantized and (yt.scale != 1 / 256 or int8_grid(yt)[0] != -128):
            ir.refuse(OWNER, n, f"int8 LOGISTIC needs the output grid 1/256 (got {yt.scale:.6g})")
        x = self.index[n.inputs[0]] if yt.quantized else self.as_float(n.inputs[0])
        self.op(OP.LOGISTIC, [x], [self.act(n.output, self.hw[n.inputs[0]])])

    # the whole graph -----------------------------------------------------------------
    def _image(self, name: str, dims, signature) -> int:
        """The file's input or output tensor in the chosen ``io`` type (images: 1/255 grid)."""
        dtype = {"uint8": TT.UINT8, "int8": TT.INT8, "float": TT.FLOAT32}[self.io]
        q = {} if self.io == "float" else dict(scale=np.float32(1 / 255), zero_point=0 if self.io == "uint8" else -128)
        return self.tensor(name, dims, dtype, signature=signature, **q)

    def _check_image_grid(self, t: Tensor, what: str) -> None:
        if t.quantized and (t.scale, t.zero_point, t.qmin, t.qmax) != (float(np.float32(1 / 255)), 0, 0, 255):
            raise ir.UnsupportedOp(f"the graph's {what} grid is not the 8-bit image grid 1/255")

    def build(self, metadata: dict[str, bytes]) -> TfliteModel:
        g = self.g
        it, ot = g.tensor(g.input), g.tensor(g.output)
        self._check_image_grid(it, "input")
        shape = _Shape(self.height, self.width)
        x = self._image("input", [1, self.height, self.width, it.channels], [1, -1, -1, it.channels])
        self.m.inputs = [x]
        if self.io == ("int8" if it.quantized else "float"):
            self.index[g.input], self.hw[g.input] = x, shape
        else:
            self.op(OP.QUANTIZE if it.quantized else OP.DEQUANTIZE, [x], [self.act(g.input, shape)])
        for n in g.nodes:
            if n.op not in _OPS:
                ir.refuse(OWNER, n)
            _OPS[n.op](self, n)
        self._check_image_grid(ot, "output")
        y, s = self.index[g.output], self.hw[g.output]
        osig = [1, -1, -1, ot.channels]
        if self.io == ("int8" if ot.quantized else "float"):
            out = y
            self.m.tensors[y].signature = osig
        else:
            out = self._image("output", [1, s.h, s.w, ot.channels], osig)
            self.op(OP.DEQUANTIZE if self.io == "float" else OP.QUANTIZE, [y], [out])
        self.m.outputs = [out]
        self.m.metadata = metadata
        return self.m


_OPS = {"conv": _Writer.conv, "float_conv": _Writer.float_conv, "requant": _Writer.requant, "add": _Writer.binary,
        "mul": _Writer.binary, "reinterpret": _Writer.reinterpret, "concat": _Writer.concat,
        "depth_to_space": _Writer.depth_to_space, "max_pool": _Writer.max_pool, "crop": _Writer.crop,
        "sigmoid": _Writer.sigmoid, "pad": _Writer.pad}
ir.check_dispatch(_OPS, OWNER, refuses=("tile", "adq_scale"))


def to_tflite(graph: Graph, io: str = "uint8", input_size: tuple[int, int] = (128, 128),
              metadata: dict | None = None) -> bytes:
    """The TFLite flatbuffer of a LiteRT-lowered ``graph`` (NHWC, batch 1, ``input_size`` = (H, W))."""
    h, w = input_size
    meta = {"qnas.scale": str(graph.scale), "qnas.io": io, "qnas.input_size": f"{h}x{w}"}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, (str, bytes)) else json.dumps(v, sort_keys=True)
    for k, v in graph.metadata.items():
        meta.setdefault(k, v)
    # bytes (the standard TFLITE_METADATA flatbuffer) as they are; text as UTF-8
    return serialize(_Writer(graph, io, h, w).build({k: v if isinstance(v, bytes) else v.encode()
                                                     for k, v in meta.items()}))
