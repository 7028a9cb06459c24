"""Grouped convs as dense ones (zero weights across groups), where a target needs them:

* ``densify_into_d2s``: a grouped conv that feeds a depth-to-space, before its output
  channels are permuted (``crd_to_dcr``): permuted channels no longer follow the groups;
* ``u8s8_weights`` runs grouped convs it re-stores dense as well (see there).
"""
from __future__ import annotations

import numpy as np

from .. import ir
from . import Pass, Property


def block_diagonal(weight: np.ndarray, groups: int) -> np.ndarray:
    """``[O, I/g, kh, kw]`` grouped weights as dense ``[O, I, kh, kw]`` ones (zeros off the groups)."""
    o, ig = weight.shape[:2]
    og = o // groups
    dense = np.zeros((o, ig * groups) + weight.shape[2:], weight.dtype)
    for g in range(groups):
        dense[g * og:(g + 1) * og, g * ig:(g + 1) * ig] = weight[g * og:(g + 1) * og]
    return dense


def dense(attrs):
    """The same conv (``Conv`` or ``FloatConv``) with one group."""
    if attrs.groups == 1:
        return attrs
    return attrs.replace(weight=block_diagonal(attrs.weight, attrs.groups), groups=1)


def _grouped_into_d2s(graph: ir.Graph) -> list[str]:
    out = []
    for n in graph.nodes:
        if n.op == "depth_to_space":
            p = graph.producer(n.inputs[0])
            if p is not None and p.op in ("conv", "float_conv") and p.attrs.groups > 1:
                out.append(p.name)
    return out


def run(graph: ir.Graph, options=None) -> ir.Graph:
    targets = set(_grouped_into_d2s(graph))
    return graph.with_nodes([ir.Node(n.op, n.inputs, n.output, dense(n.attrs), n.name) if n.name in targets else n
                             for n in graph.nodes])


NO_GROUPED_INTO_D2S = Property("no grouped conv feeds a depth_to_space", _grouped_into_d2s)

PASS = Pass("densify_into_d2s", run, ensures=(NO_GROUPED_INTO_D2S,))
