"""A uint8 copy between a conv and the add that reads it (ONNX: a 1x1 ``MaxPool``).

OpenVINO's CPU plugin fuses conv -> QuantizeLinear -> DequantizeLinear -> Add into one
convolution with a sum post-op and then applies the conv's quantisation without rounding
(``intel_cpu/src/nodes/convolution.cpp``, ``Convolution::setPostOps``: "drop rounding one
special residual pattern"), so it computes a residual the trained model rounds at another
value: up to dozens of steps apart on the anchored Basic entries. A data-movement op that
OpenVINO keeps between the two stops the fusion: a 1x1 max pool (Identity and one-input
Concat are removed; an identity DepthToSpace works too but makes onnxruntime's NHWC
layout transpose around it, 17% slower on basic_mixed, where its uint8 max pool is an NHWC
kernel). onnxruntime still fuses the conv and computes the same values: the copy is exact
everywhere, but costs onnxruntime time, so only the ``openvino`` target's file has it.
"""
from __future__ import annotations

from .. import ir
from ..ir import Tensor
from . import Pass, Property


def _conv_fed(graph: ir.Graph, n: ir.Node) -> list[str]:
    """The inputs of add ``n`` that a conv writes on a quantized grid."""
    out = []
    for t in n.inputs:
        p = graph.producer(t)
        if p is not None and p.op == "conv" and graph.tensor(t).quantized:
            out.append(t)
    return out


def run(graph: ir.Graph, options=None) -> ir.Graph:
    tensors, nodes = dict(graph.tensors), []
    for n in graph.nodes:
        if n.op == "add" and graph.tensor(n.output).quantized:
            inputs = list(n.inputs)
            for i, t in enumerate(inputs):
                if t in _conv_fed(graph, n):
                    src = tensors[t]
                    copy = f"{t}.copy"
                    if copy not in tensors:
                        tensors[copy] = Tensor(copy, src.channels, src.scale, src.zero_point, src.qmin, src.qmax)
                        nodes.append(ir.Node("max_pool", [t], copy, ir.MaxPool(kernel=1, stride=1),
                                             f"{n.name}.copy{i}"))
                    inputs[i] = copy
            n = ir.Node(n.op, inputs, n.output, n.attrs, n.name)
        nodes.append(n)
    return graph.with_nodes(nodes, tensors)


NO_CONV_INTO_ADD = Property(
    "no quantized add reads a conv's output directly",
    lambda g: [n.name for n in g.nodes if n.op == "add" and g.tensor(n.output).quantized and _conv_fed(g, n)])

PASS = Pass("conv_add_copy", run, ensures=(NO_CONV_INTO_ADD,))
