"""With ``--int4 packed``, the filters of convs of 4 or fewer bits stored as INT4 (two
per byte) instead of in an int8 container; a no-op otherwise."""
from __future__ import annotations

from .. import ir
from . import Pass


def _packable(n) -> bool:
    return n.op == "conv" and n.attrs.w_bits <= 4 and n.attrs.storage == "int8"


def run(graph: ir.Graph, options) -> ir.Graph:
    if options.int4 != "packed":
        return graph
    return graph.with_nodes([ir.Node(n.op, n.inputs, n.output, n.attrs.replace(storage="int4"), n.name)
                             if _packable(n) else n for n in graph.nodes])


PASS = Pass("pack_int4", run)
