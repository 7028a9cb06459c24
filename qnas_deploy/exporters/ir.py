"""The integer graph: a small backend-neutral IR of quantized operations.

Tensors are NCHW with dynamic height and width. A quantized tensor holds uint8 values
``q`` that mean ``(q - zero_point) * scale`` and lie in ``[qmin, qmax]`` (sub-8-bit grids
use a narrower range of the 8-bit container). A float tensor has ``scale=None``.

Operations (``Node.op``) and their exact meaning are defined by the numpy executor in
``reference.py``; every serializer maps each of them to its runtime's operators:

=================  ====================================================================
``conv``           integer conv: int8 weights ``[O, I/g, kh, kw]``, per-channel ``w_scale``,
                   int32 ``bias`` on ``s_in * w_scale``, requantised to the output grid
                   (float weights and bias when the layer is float)
``requant``        onto another grid (``zero_point == qmin == 0`` makes it a ReLU)
``add``, ``mul``   elementwise, optional constant factor ``mult`` on the result
``concat``         along channels, each input requantised to the output grid
``depth_to_space`` PixelShuffle order (CRD), or DCR with ``mode="DCR"``; output grid = input grid
``tile``           channels repeated ``times`` (RFDN's input); output grid = input grid
``max_pool``       ``kernel``, ``stride``, no padding; output grid = input grid
``resize``         bilinear, half-pixel centres, to the size of input 1; same grid
``sigmoid``        to the fixed 1/256 output grid
``adq_scale``      float ``a * std(x) + c`` per image (dynamic ADQ only)
``relu``           float networks only
=================  ====================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any



@dataclass
class Tensor:
    name: str
    channels: int
    scale: float | None = None      # None: float tensor
    zero_point: int = 0
    qmin: int = 0
    qmax: int = 255

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def same_grid(self, other: "Tensor") -> bool:
        return (self.scale == other.scale and self.zero_point == other.zero_point
                and self.qmin == other.qmin and self.qmax == other.qmax)


@dataclass
class Node:
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]
    input: str
    output: str
    scale: int
    metadata: dict[str, str] = field(default_factory=dict)

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def conv_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "conv"]
