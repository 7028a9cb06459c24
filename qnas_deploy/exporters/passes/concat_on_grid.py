"""Every quantized ``concat`` input onto the concat's output grid, by an explicit
``requant`` in front of it (int8 TFLite CONCATENATION wants one grid on all inputs)."""
from __future__ import annotations

from .. import ir
from . import Pass, Property


def _off_grid(graph: ir.Graph, n: ir.Node) -> list[str]:
    y = graph.tensor(n.output)
    if not y.quantized:
        return []
    return [i for i in n.inputs if not (graph.tensor(i).quantized and graph.tensor(i).same_grid(y))]


def run(graph: ir.Graph, options=None) -> ir.Graph:
    tensors, nodes = dict(graph.tensors), []
    for n in graph.nodes:
        if n.op == "concat" and _off_grid(graph, n):
            y = graph.tensor(n.output)
            inputs = []
            for i in n.inputs:
                t = graph.tensor(i)
                if t.quantized and t.same_grid(y):
                    inputs.append(i)
                    continue
                if not t.quantized:
                    raise ir.UnsupportedOp(f"{n.name}: a float input to a quantized concat cannot be exported "
                                           "to this target")
                view = ir.Tensor(f"{i}.to.{n.output}", t.channels, y.scale, y.zero_point, y.qmin, y.qmax)
                tensors[view.name] = view
                nodes.append(ir.Node("requant", [i], view.name, ir.Requant(), view.name))
                inputs.append(view.name)
            n = ir.Node(n.op, inputs, n.output, n.attrs, n.name)
        nodes.append(n)
    return graph.with_nodes(nodes, tensors)


CONCAT_ON_GRID = Property(
    "every quantized concat input is on the concat's output grid",
    lambda g: [n.name for n in g.nodes if n.op == "concat" and _off_grid(g, n)])

PASS = Pass("concat_on_grid", run, ensures=(CONCAT_ON_GRID,))
