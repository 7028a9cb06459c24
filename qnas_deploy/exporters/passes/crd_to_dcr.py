"""PixelShuffle's (CRD) depth-to-space -> DCR, by permuting the producing conv's outputs.

TFLite's DEPTH_TO_SPACE reads channels in DCR order only (FACTS.md section 3): DCR
channel ``(i*r + j)*C + c`` takes CRD channel ``c*r*r + i*r + j``. The permutation goes
into the weights, bias and scales of the conv that writes the tensor, which must have
no other reader.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from . import Pass, Property
from .dense import NO_GROUPED_INTO_D2S


def d2s_permutation(channels_out: int, r: int) -> np.ndarray:
    return np.array([c * r * r + i * r + j for i in range(r) for j in range(r) for c in range(channels_out)])


def _permuted(attrs, perm: np.ndarray):
    changes = dict(weight=attrs.weight[perm], bias=attrs.bias[perm] if attrs.bias is not None else None)
    if isinstance(attrs, ir.Conv):
        changes["w_scale"] = attrs.w_scale[perm]
    return attrs.replace(**changes)


def run(graph: ir.Graph, options=None) -> ir.Graph:
    changed: dict[str, ir.Node] = {}
    for n in graph.nodes:
        if n.op != "depth_to_space" or n.attrs.mode != "CRD":
            continue
        src = n.inputs[0]
        p = graph.producer(src)
        if p is None or p.op not in ("conv", "float_conv") or len(graph.consumers(src)) != 1:
            raise ir.UnsupportedOp(f"depth_to_space input {src!r} is not a conv feeding only it; "
                                   "its channels cannot be reordered for a DCR-only target")
        r = n.attrs.blocksize
        perm = d2s_permutation(graph.tensor(n.output).channels, r)
        changed[p.name] = ir.Node(p.op, p.inputs, p.output, _permuted(p.attrs, perm), p.name)
        changed[n.name] = ir.Node(n.op, n.inputs, n.output, n.attrs.replace(mode="DCR"), n.name)
    return graph.with_nodes([changed.get(n.name, n) for n in graph.nodes])


ALL_DCR = Property("every depth_to_space is DCR",
                   lambda g: [n.name for n in g.nodes if n.op == "depth_to_space" and n.attrs.mode != "DCR"])

PASS = Pass("crd_to_dcr", run, requires=(NO_GROUPED_INTO_D2S,), ensures=(ALL_DCR,))
