"""The TFLite flatbuffer itself: a flat model of tensors and operators (``FbBuilder``
makes one, knowing TFLite's layouts but not the IR), serialized with the ``tflite``
schema package and ``flatbuffers`` (no TensorFlow)."""
from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite

SCHEMA_VERSION = 3


@dataclass
class FbTensor:
    name: str
    shape: list[int]
    dtype: int
    data: np.ndarray | None = None
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    qdim: int = 0
    signature: list[int] | None = None


@dataclass
class FbOp:
    code: int
    inputs: list[int]
    outputs: list[int]
    options: tuple[str, int, dict] | None = None  # (table name, BuiltinOptions enum, fields)


@dataclass
class TfliteModel:
    tensors: list[FbTensor] = field(default_factory=list)
    ops: list[FbOp] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)


def options(table: str, **fields) -> tuple[str, int, dict]:
    """A builtin operator's options table; ``fields`` are written in their order."""
    return table, getattr(tflite.BuiltinOptions, table), fields


class FbBuilder:
    """Appends tensors and operators to a :class:`TfliteModel`."""

    def __init__(self):
        self.m = TfliteModel()
        self.size_tensor: int | None = None
        self.slice_size: int | None = None

    def input_hw(self) -> int:
        """The int32 ``[H, W]`` of the (resizable) model input, computed once (SHAPE + STRIDED_SLICE)."""
        if self.size_tensor is None:
            shp = self.tensor("input.shape", [4], tflite.TensorType.INT32)
            self.op(tflite.BuiltinOperator.SHAPE, [self.m.inputs[0]], [shp],
                    options("ShapeOptions", OutType=tflite.TensorType.INT32))
            begin, end, step = (self.const(f"input.hw.{k}", np.array([v], np.int32), tflite.TensorType.INT32)
                                for k, v in (("begin", 1), ("end", 3), ("step", 1)))
            self.size_tensor = self.tensor("input.hw", [2], tflite.TensorType.INT32)
            self.op(tflite.BuiltinOperator.STRIDED_SLICE, [shp, begin, end, step], [self.size_tensor],
                    options("StridedSliceOptions"))
        return self.size_tensor

    def slice_end(self) -> int:
        """The int32 STRIDED_SLICE end ``[1, H, W, -1]`` of the (resizable) model input (N and C masked)."""
        if self.slice_size is None:
            one, rest = (self.const(f"input.size.{k}", np.array([v], np.int32), tflite.TensorType.INT32)
                         for k, v in (("n", 1), ("c", -1)))
            self.slice_size = self.tensor("input.size", [4], tflite.TensorType.INT32)
            self.op(tflite.BuiltinOperator.CONCATENATION, [one, self.input_hw(), rest], [self.slice_size],
                    options("ConcatenationOptions", Axis=0))
        return self.slice_size

    def tensor(self, name, shape, dtype, data=None, scale=None, zero_point=None, qdim=0, signature=None) -> int:
        if scale is not None:
            scale = np.atleast_1d(np.asarray(scale, np.float32))
            zero_point = np.atleast_1d(np.asarray(zero_point if zero_point is not None else 0, np.int64))
        self.m.tensors.append(FbTensor(name, [int(s) for s in shape], dtype, data, scale, zero_point, qdim, signature))
        return len(self.m.tensors) - 1

    def const(self, name, arr: np.ndarray, dtype: int, **q) -> int:
        return self.tensor(name, arr.shape, dtype, np.ascontiguousarray(arr), **q)

    def op(self, code, inputs, outputs, opts=None) -> None:
        self.m.ops.append(FbOp(code, list(inputs), list(outputs), opts))

    def conv2d(self, name: str, x: int, out: int, w: np.ndarray, w_dtype: int, bias: np.ndarray, w_scale, bias_scale,
               depthwise: bool, fields: dict) -> None:
        """CONV_2D or DEPTHWISE_CONV_2D from PyTorch-layout weights ``[O, I/g, kh, kw]``."""
        o, _, kh, kw = w.shape
        if depthwise:
            wt, qdim = w.reshape(o, kh, kw).transpose(1, 2, 0)[None], 3  # [1, kh, kw, O]
        else:
            wt, qdim = w.transpose(0, 2, 3, 1), 0  # [O, kh, kw, I/g]
        q = dict(scale=w_scale, zero_point=np.zeros(o, np.int64), qdim=qdim) if w_scale is not None else {}
        if w_dtype == tflite.TensorType.INT4:
            wi = self.tensor(f"{name}.weight", wt.shape, w_dtype, pack_int4(np.ascontiguousarray(wt).reshape(-1)), **q)
        else:
            wi = self.const(f"{name}.weight", np.ascontiguousarray(wt), w_dtype, **q)
        bq = dict(scale=bias_scale, zero_point=np.zeros(o, np.int64)) if bias_scale is not None else {}
        bi = self.const(f"{name}.bias", bias, tflite.TensorType.INT32 if bias.dtype == np.int32 else
                        tflite.TensorType.FLOAT32, **bq)
        if depthwise:
            self.op(tflite.BuiltinOperator.DEPTHWISE_CONV_2D, [x, wi, bi], [out],
                    options("DepthwiseConv2DOptions", **fields, DepthMultiplier=1))
        else:
            self.op(tflite.BuiltinOperator.CONV_2D, [x, wi, bi], [out], options("Conv2DOptions", **fields))


def pack_int4(v: np.ndarray) -> np.ndarray:
    """Two signed 4-bit values per byte, low nibble first (TFLite's INT4 layout)."""
    v = v.astype(np.int8)
    if v.size % 2:
        v = np.concatenate([v, np.zeros(1, np.int8)])
    lo, hi = v[0::2].astype(np.uint8) & 0x0F, v[1::2].astype(np.uint8) & 0x0F
    return (lo | (hi << 4)).astype(np.uint8)


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
    subgraph = _table(b, "SubGraph", Tensors=tensors_v, Inputs=in_v, Outputs=out_v, Operators=ops_v, Name=sg_name)
    code_offsets = [_table(b, "OperatorCode", DeprecatedBuiltinCode=min(c, 127), BuiltinCode=c, Version=1)
                    for c in codes]
    meta_offsets = []
    for k, idx in meta_buffer.items():
        name = b.CreateString(k)
        meta_offsets.append(_table(b, "Metadata", Name=name, Buffer=idx))
    codes_v = table_vector(tflite.ModelStartOperatorCodesVector, code_offsets)
    subgraphs_v = table_vector(tflite.ModelStartSubgraphsVector, [subgraph])
    buffers_v = table_vector(tflite.ModelStartBuffersVector, buffers)
    meta_v = table_vector(tflite.ModelStartMetadataVector, meta_offsets)
    desc = b.CreateString(description)
    model = _table(b, "Model", Version=SCHEMA_VERSION, OperatorCodes=codes_v, Subgraphs=subgraphs_v, Description=desc,
                   Buffers=buffers_v, Metadata=meta_v)
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


def _table(b: flatbuffers.Builder, name: str, **fields) -> int:
    """One table of the schema, its fields added in the order given (the order is the layout)."""
    getattr(tflite, f"{name}Start")(b)
    for k, v in fields.items():
        getattr(tflite, f"{name}Add{k}")(b, v)
    return getattr(tflite, f"{name}End")(b)
