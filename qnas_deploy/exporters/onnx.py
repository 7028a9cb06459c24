"""QDQ ONNX from the integer graph.

Every quantized tensor is a uint8 tensor in the file; an operation reads it through its
own DequantizeLinear and writes through QuantizeLinear (and a uint8 ``Clip`` for
sub-8-bit grids, FACTS.md section 2), the pattern onnxruntime's CPU provider fuses into
QLinearConv / QLinearMul / QLinearConcat / QLinearSigmoid (FACTS.md section 1). A
quantized add is written as ``Sum``, which no fusion takes: onnxruntime's QLinearAdd rounds
per CPU (fused multiply-adds in float32 on x86, 21-bit fixed-point multipliers with ties
away from zero on aarch64, MLAS ``qladd*.cpp``), while DequantizeLinear, ``Sum`` and
QuantizeLinear are single IEEE float32 operations, the same on every CPU and the model's
own arithmetic. Data movement (depth-to-space, channel tiling, max-pool) runs on the uint8
tensors directly. Activations are uint8 with zero point 128 for signed tensors: on x86,
int8 activations lose fusion where a tensor has two consumers (every residual does).
"""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__
from . import ir
from .ir import Graph, Node, Tensor

OPSET = 13
IR_VERSION = 10  # onnx writes a newer IR than onnxruntime 1.31 reads (FACTS: 13 at most)
F32 = np.float32



class _Writer:
    def __init__(self, graph: Graph):
        self.g = graph
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._consts: dict[str, str] = {}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def const(self, base: str, arr: np.ndarray, dtype: int | None = None) -> str:
        name = self.fresh(base)
        if dtype is None:
            self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        else:
            self.inits.append(helper.make_tensor(name, dtype, list(np.shape(arr)), np.asarray(arr).flatten().tolist()))
        return name

    def qparams(self, t: Tensor, scale: float | None = None) -> tuple[str, str]:
        key = f"{t.name}|{scale}"
        if key not in self._consts:
            s = self.const(f"{t.name}.scale", np.array(scale if scale is not None else t.scale, dtype=F32))
            z = self.const(f"{t.name}.zero_point", np.array(t.zero_point, dtype=np.uint8))
            self._consts[key] = f"{s}|{z}"
        s, z = self._consts[key].split("|")
        return s, z

    def node(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        out = self.fresh(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def dq(self, name: str) -> str:
        """A float view of tensor ``name`` (a DequantizeLinear per consumer, as QDQ expects)."""
        t = self.g.tensor(name)
        if not t.quantized:
            return name
        s, z = self.qparams(t)
        return self.node("DequantizeLinear", [name, s, z], f"{name}.dq")

    def q(self, value: str, t: Tensor, scale: float | None = None) -> str:
        """Quantize float ``value`` onto ``t``'s grid, writing tensor ``t.name``."""
        if not t.quantized:
            return self.node("Identity", [value], t.name) if value != t.name else value
        s, z = self.qparams(t, scale)
        if t.qmin == 0 and t.qmax == 255:
            out = t.name
            self._names.add(out)
            self.nodes.append(helper.make_node("QuantizeLinear", [value, s, z], [out], name=out + ".q"))
            return out
        q = self.node("QuantizeLinear", [value, s, z], f"{t.name}.q8")
        lo = self.const(f"{t.name}.clip_min", np.array(t.qmin, dtype=np.uint8))
        hi = self.const(f"{t.name}.clip_max", np.array(t.qmax, dtype=np.uint8))
        self._names.add(t.name)
        self.nodes.append(helper.make_node("Clip", [q, lo, hi], [t.name], name=t.name + ".clip"))
        return t.name

    # operations ----------------------------------------------------------------------
    @staticmethod
    def _conv_attrs(a) -> dict:
        ph, pw = a.pad
        return dict(pads=[ph, pw, ph, pw], strides=[a.stride] * 2, dilations=[a.dilation] * 2, group=a.groups,
                    kernel_shape=list(a.kernel))

    def float_conv(self, n: Node) -> None:
        a = n.attrs
        x = self.dq(n.inputs[0])
        if a.relu_in:
            x = self.node("Relu", [x], f"{n.name}.relu")
        w = self.const(f"{n.name}.weight", a.weight.astype(F32))
        b = self.const(f"{n.name}.bias", a.bias.astype(F32))
        y = self.node("Conv", [x, w, b], f"{n.name}.conv", **self._conv_attrs(a))
        if a.mult != 1.0:
            y = self.node("Mul", [y, self.const(f"{n.name}.mult", np.array(a.mult, F32))], f"{n.name}.mult")
        self.q(y, self.g.tensor(n.output))

    def conv(self, n: Node) -> None:
        a = n.attrs
        xt = self.g.tensor(n.inputs[0])
        w_scale = a.scaled_w_scale()
        if a.storage == "int4":
            ir.refuse("the ONNX serializer", n, "packed INT4 weights (no onnxruntime integer kernel takes them; pack_int4 refuses)")
        if a.storage == "uint8":
            w = self.const(f"{n.name}.weight", (a.weight.astype(np.int16) + 128).astype(np.uint8))
            wz = self.const(f"{n.name}.weight_zp", np.full(len(w_scale), 128, np.uint8))
        else:
            w = self.const(f"{n.name}.weight", a.weight.astype(np.int8))
            wz = self.const(f"{n.name}.weight_zp", np.zeros(len(w_scale), np.int8))
        ws = self.const(f"{n.name}.weight_scale", w_scale)
        params = [self.node("DequantizeLinear", [w, ws, wz], f"{n.name}.weight.dq", axis=0)]
        if a.bias is not None:
            bs = self.const(f"{n.name}.bias_scale", (F32(xt.scale) * w_scale).astype(F32))
            b = self.const(f"{n.name}.bias", a.bias.astype(np.int32))
            bz = self.const(f"{n.name}.bias_zp", np.zeros(len(w_scale), np.int32))
            params.append(self.node("DequantizeLinear", [b, bs, bz], f"{n.name}.bias.dq", axis=0))
        inputs = [self.dq(n.inputs[0]), *params]
        y = self.node("Conv", inputs, f"{n.name}.conv", **self._conv_attrs(a))
        self.q(y, self.g.tensor(n.output))

    def requant(self, n: Node) -> None:
        """Into or out of a float tensor (between two grids it is a conv: ``passes/requant_as_conv.py``)."""
        self.q(self.dq(n.inputs[0]), self.g.tensor(n.output))

    def binary(self, n: Node) -> None:
        yt = self.g.tensor(n.output)
        op = "Sum" if n.op == "add" and yt.quantized else n.op.capitalize()
        y = self.node(op, [self.dq(n.inputs[0]), self.dq(n.inputs[1])], f"{n.output}.{op.lower()}")
        mult = n.attrs.mult
        # A factor stays a float Mul of its own, as the model computes it: folded into the
        # output scale, onnxruntime would fuse DQ -> Mul -> Q into QLinearMul, whose one
        # float32 ratio and float zero-point add round otherwise near half steps.
        if mult != 1.0:
            y = self.node("Mul", [y, self.const(f"{n.output}.mult", np.array(mult, F32))], f"{n.output}.mult")
        self.q(y, yt)

    def concat(self, n: Node) -> None:
        y = self.node("Concat", [self.dq(i) for i in n.inputs], f"{n.output}.concat", axis=1)
        self.q(y, self.g.tensor(n.output))

    # Data movement runs on the uint8 tensors themselves.
    def _direct(self, n: Node, op: str, inputs: list[str], suffix: str, **attrs) -> None:
        self._names.add(n.output)
        self.nodes.append(helper.make_node(op, inputs, [n.output], name=f"{n.output}.{suffix}", **attrs))

    def depth_to_space(self, n: Node) -> None:
        self._direct(n, "DepthToSpace", n.inputs, "depthtospace", blocksize=n.attrs.blocksize, mode=n.attrs.mode)

    def max_pool(self, n: Node) -> None:
        self._direct(n, "MaxPool", n.inputs, "maxpool", kernel_shape=[n.attrs.kernel] * 2,
                     strides=[n.attrs.stride] * 2)

    def pad(self, n: Node) -> None:
        """Symmetric mirror padding as slices read backwards and concatenated (ONNX Pad has no
        edge-repeating mirror mode); needs at least ``pad`` pixels along each axis."""
        x = n.inputs[0]
        for axis, p in ((2, n.attrs.pads[0]), (3, n.attrs.pads[1])):
            if p == 0:
                continue
            i = lambda v, k: self.const(f"{n.output}.a{axis}.{k}", np.array([v], np.int64))  # noqa: E731
            ax, back = i(axis, "axis"), i(-1, "step")
            near = self.node("Slice", [x, i(p - 1, "near_start"), i(np.iinfo(np.int64).min, "near_end"), ax, back],
                             f"{n.output}.a{axis}.near")
            far = self.node("Slice", [x, i(-1, "far_start"), i(-1 - p, "far_end"), ax, back], f"{n.output}.a{axis}.far")
            x = self.node("Concat", [near, x, far], f"{n.output}.a{axis}", axis=axis)
        self._direct(n, "Identity", [x], "pad")

    def tile(self, n: Node) -> None:
        self._direct(n, "Concat", [n.inputs[0]] * n.attrs.times, "tile", axis=1)

    def crop(self, n: Node) -> None:
        shape_r = self.node("Shape", [n.inputs[1]], f"{n.output}.shape_ref")
        i2, i4 = (self.const(f"{n.output}.i{k}", np.array([k], np.int64)) for k in (2, 4))
        hw = self.node("Slice", [shape_r, i2, i4], f"{n.output}.hw")
        zeros = self.const(f"{n.output}.zeros", np.zeros(2, np.int64))
        self._direct(n, "Slice", [n.inputs[0], zeros, hw, self.const(f"{n.output}.axes", np.array([2, 3], np.int64))],
                     "crop")

    def sigmoid(self, n: Node) -> None:
        self.q(self.node("Sigmoid", [self.dq(n.inputs[0])], f"{n.output}.sigmoid"), self.g.tensor(n.output))

    def adq_scale(self, n: Node) -> None:
        """``a * std(x) + c`` per image, unbiased std over channels and pixels (float)."""
        x = self.dq(n.inputs[0])
        p = n.output
        mean = self.node("ReduceMean", [x], f"{p}.mean", axes=[1, 2, 3], keepdims=1)
        d = self.node("Sub", [x, mean], f"{p}.centred")
        var = self.node("ReduceMean", [self.node("Mul", [d, d], f"{p}.sq")], f"{p}.var", axes=[1, 2, 3], keepdims=1)
        size = self.node("Cast", [self.node("Size", [x], f"{p}.size")], f"{p}.size_f", to=TensorProto.FLOAT)
        shape = self.node("Shape", [x], f"{p}.shape")
        batch = self.node("Slice", [shape, self.const(f"{p}.i0", np.array([0], np.int64)),
                                    self.const(f"{p}.i1", np.array([1], np.int64))], f"{p}.batch")
        batch_f = self.node("Cast", [batch], f"{p}.batch_f", to=TensorProto.FLOAT)
        count = self.node("Div", [size, batch_f], f"{p}.count")
        one = self.const(f"{p}.one", np.array(1.0, F32))
        corr = self.node("Div", [count, self.node("Sub", [count, one], f"{p}.count_m1")], f"{p}.bessel")
        std = self.node("Sqrt", [self.node("Mul", [var, corr], f"{p}.var_unbiased")], f"{p}.std")
        a = self.const(f"{p}.a", np.array(n.attrs.a, F32))
        c = self.const(f"{p}.c", np.array(n.attrs.c, F32))
        y = self.node("Add", [self.node("Mul", [std, a], f"{p}.a_std"), c], f"{p}.phi")
        self.nodes.append(helper.make_node("Identity", [y], [p], name=p + ".out"))
        self._names.add(p)


_OPS = {"conv": _Writer.conv, "float_conv": _Writer.float_conv, "requant": _Writer.requant, "add": _Writer.binary,
        "mul": _Writer.binary, "concat": _Writer.concat, "depth_to_space": _Writer.depth_to_space,
        "max_pool": _Writer.max_pool, "tile": _Writer.tile, "crop": _Writer.crop, "sigmoid": _Writer.sigmoid,
        "adq_scale": _Writer.adq_scale, "pad": _Writer.pad}
ir.check_dispatch(_OPS, "the ONNX serializer", refuses=("reinterpret",))


def to_onnx(graph: Graph, io: str = "uint8", metadata: dict | None = None) -> onnx.ModelProto:
    """Serialize a target-lowered ``graph`` to a QDQ ONNX model (dynamic batch, height and width)."""
    if io not in ("uint8", "float"):
        raise ValueError(f"io must be uint8 or float, got {io!r}")
    w = _Writer(graph)
    image_t = graph.tensor(graph.input)
    in_type = TensorProto.UINT8 if io == "uint8" else TensorProto.FLOAT
    inp = helper.make_tensor_value_info("input", in_type, ["batch", image_t.channels, "height", "width"])
    w._names.update({"input", "output"})
    # The graph input -> the IR's input tensor.
    if image_t.quantized:
        if io == "uint8":
            w.nodes.append(helper.make_node("Identity", ["input"], [graph.input], name="input.identity"))
        else:
            w.q("input", image_t)
    else:
        x = "input"
        if io == "uint8":
            x = w.node("Cast", ["input"], "input.float", to=TensorProto.FLOAT)
            x = w.node("Div", [x, w.const("input.255", np.array(255.0, F32))], "input.unit")
        w.nodes.append(helper.make_node("Identity", [x], [graph.input], name="input.to_graph"))
    w._names.add(graph.input)
    for n in graph.nodes:
        if n.op not in _OPS:
            ir.refuse("the ONNX serializer", n)
        if n.op == "requant" and graph.tensor(n.inputs[0]).quantized and graph.tensor(n.output).quantized:
            ir.refuse("the ONNX serializer", n, "lower it for an ONNX target (requant_as_conv)")
        _OPS[n.op](w, n)

    out_t = graph.tensor(graph.output)
    if out_t.quantized:
        last = graph.output if io == "uint8" else w.dq(graph.output)
    else:  # a float network still returns an image: clamp and round to 1/255
        y = w.node("Mul", [graph.output, w.const("output.255", np.array(255.0, F32))], "output.255x")
        y = w.node("Clip", [w.node("Round", [y], "output.round"), w.const("output.lo", np.array(0.0, F32)),
                            w.const("output.hi", np.array(255.0, F32))], "output.clip")
        if io == "uint8":
            last = w.node("Cast", [y], "output.u8", to=TensorProto.UINT8)
        else:
            last = w.node("Div", [y, w.const("output.div", np.array(255.0, F32))], "output.unit")
    w.nodes.append(helper.make_node("Identity", [last], ["output"], name="output.identity"))
    out = helper.make_tensor_value_info("output", in_type, ["batch", out_t.channels, "out_height", "out_width"])

    g = helper.make_graph(w.nodes, "qnas_deploy", [inp], [out], initializer=w.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="qnas-deploy", producer_version=__version__)
    model.ir_version = IR_VERSION
    props = {"qnas.scale": str(graph.scale), "qnas.io": io, **(metadata or {})}
    helper.set_model_props(model, {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in props.items()})
    return model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim without constant folding: folding DequantizeLinear of the weights would turn
    them back into float initializers and undo the QDQ pattern onnxruntime fuses."""
    import onnxsim

    simplified, ok = onnxsim.simplify(model, skip_constant_folding=True, skip_shape_inference=False,
                                      skipped_optimizers=["eliminate_common_subexpression"])
    if not ok:
        return model
    simplified.ir_version = IR_VERSION
    return simplified
