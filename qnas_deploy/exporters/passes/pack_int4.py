"""With ``--int4 packed``, the filters of convs of 4 or fewer bits stored as INT4 (two
per byte) instead of in an int8 container; a no-op otherwise.

Refused for ``litert-xnnpack``: LiteRT's XNNPACK delegate takes no INT4 conv filter
(``xnnpack_delegate.cc``: ``CheckTensorFloat32OrQCInt8Type`` on CONV_2D and
DEPTHWISE_CONV_2D filters), so those convs would fall back to the builtin kernel, which
unpacks the filter on every run and requantises with ruy, whose rounding differs between
x86 (two roundings) and aarch64 (one): not the target's arithmetic, and slower than the
int8 container XNNPACK runs.

Refused for ONNX too: no integer kernel of onnxruntime takes INT4 weights, so it runs each
such conv as a float32 conv on the dequantized weights (``Conv`` left in the optimized
graph), whose float sums are not the integer accumulator: 99.5% identical pixels, up to
40 steps apart, on a trained basic_w4a4, on x86 and aarch64 alike."""
from __future__ import annotations

from .. import ir
from ..options import SERIALIZER
from . import Pass


def _packable(n) -> bool:
    return n.op == "conv" and n.attrs.w_bits <= 4 and n.attrs.storage == "int8"


XNNPACK_REFUSAL = (
    "--int4 packed for --target litert-xnnpack: LiteRT's XNNPACK delegate takes no INT4 conv filter, so {n} "
    "conv(s) ({names}) would run in LiteRT's builtin kernels, which round differently on x86 and aarch64, and "
    "slower than the int8 container; export with --int4 container (XNNPACK runs it identically on x86 and "
    "aarch64) or with --int4 packed --target litert-builtin")


ONNX_REFUSAL = (
    "--int4 packed for ONNX: onnxruntime has no integer kernel for INT4 weights and runs {n} conv(s) ({names}) "
    "as float32 convs on dequantized weights, which do not compute the integer arithmetic; export with --int4 "
    "container (the same values, exactly), or --format tflite --int4 packed --target litert-builtin")


def run(graph: ir.Graph, options) -> ir.Graph:
    if options.int4 != "packed":
        return graph
    onnx = SERIALIZER[options.format] == "onnx"  # an ORT file is an ONNX file
    refusal = ONNX_REFUSAL if onnx else XNNPACK_REFUSAL if options.target == "litert-xnnpack" \
        else None
    if refusal:
        packed = [n.name for n in graph.nodes if _packable(n) and graph.tensor(n.inputs[0]).quantized
                  and graph.tensor(n.output).quantized]
        if packed:
            raise ir.UnsupportedOp(refusal.format(n=len(packed), names=", ".join(packed[:3])
                                                  + (", ..." if len(packed) > 3 else "")))
    if onnx:  # nothing integer to pack (a 4-bit conv into a float tensor stays int8)
        return graph
    return graph.with_nodes([ir.Node(n.op, n.inputs, n.output, n.attrs.replace(storage="int4"), n.name)
                             if _packable(n) else n for n in graph.nodes])


PASS = Pass("pack_int4", run)
