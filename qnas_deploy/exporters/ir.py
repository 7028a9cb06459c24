"""The integer graph: a small, typed, backend-neutral IR of quantized operations.

Tensors are NCHW with dynamic height and width. A quantized tensor holds uint8 values
``q`` that mean ``(q - zero_point) * scale`` and lie in ``[qmin, qmax]`` (sub-8-bit grids
use a narrower range of the 8-bit container). A float tensor has ``scale=None``.

Every operation is a frozen attribute class registered in :data:`OPS` under the name a
:class:`Node` carries; its exact meaning is the numpy reference (``reference.py``).
Lowering (``lower.py``) emits the canonical operations; a target's passes
(``passes/``) rewrite them into what that target's serializer maps one to one
(``requant`` into an identity ``conv``, ``tile`` into a one-hot ``conv``, ...), and
``reinterpret`` exists only in target-lowered graphs.

=================  ====================================================================
``conv``           integer conv: int8 weights ``[O, I/g, kh, kw]``, per-channel
                   ``w_scale``, int32 ``bias`` on ``s_in * w_scale`` (or none), requantised
                   to the output grid; ``storage`` is how the file holds the weights
``float_conv``     float32 weights and bias (a full-precision layer)
``requant``        onto another grid (``zero_point == qmin == 0`` makes it a ReLU)
``add``, ``mul``   elementwise, optional constant factor ``mult`` on the result
``concat``         along channels, each input requantised to the output grid
``depth_to_space`` PixelShuffle order (CRD), or DCR; output grid = input grid
``tile``           channels repeated ``times`` (RFDN's input); output grid = input grid
``max_pool``       ``kernel``, ``stride``, no padding; output grid = input grid
``crop``           to the height and width of input 1, from the top left; same grid
``sigmoid``        to the fixed 1/256 output grid
``adq_scale``      float ``a * std(x) + c`` per image (dynamic ADQ only)
``pad``            symmetric (edge-repeating) mirror padding; output grid = input grid
``reinterpret``    the same integers declared on another grid (no arithmetic)
=================  ====================================================================
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import BadInput


class UnsupportedOp(BadInput):
    """A graph holds an operation (or a form of one) that a target cannot take."""


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


OPS: dict[str, type] = {}


def _op(name: str):
    """Register an attribute class as IR operation ``name`` (frozen, keyword-only)."""
    def register(cls):
        cls = dataclass(frozen=True, eq=False, kw_only=True)(cls)
        cls.op = name
        OPS[name] = cls
        return cls
    return register


class Attrs:
    op: ClassVar[str]

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False, kw_only=True)
class _ConvGeometry(Attrs):
    """What every conv shares: the window and how it slides."""
    stride: int
    pad: tuple[int, int]
    dilation: int
    groups: int
    kernel: tuple[int, int]

    @property
    def c_out(self) -> int:
        return self.weight.shape[0]

    def depthwise(self, c_in: int) -> bool:
        return self.groups > 1 and self.groups == c_in == self.c_out


WEIGHT_STORAGE = ("int8", "uint8", "int4")  # uint8: zero point 128 (passes/u8s8_weights.py)


@_op("conv")
class Conv(_ConvGeometry):
    weight: np.ndarray               # int8 [O, I/g, kh, kw]
    w_scale: np.ndarray              # float32 [O]
    bias: np.ndarray | None          # int32 [O] on the s_in * w_scale grid; None: no bias
    w_bits: int
    mult: float = 1.0                # folded into the output scale (static ADQ)
    storage: str = "int8"

    def __post_init__(self):
        if self.storage not in WEIGHT_STORAGE:
            raise ValueError(f"conv storage must be one of {WEIGHT_STORAGE}, got {self.storage!r}")

    def scaled_w_scale(self) -> np.ndarray:
        """Per-channel weight scales with ``mult`` folded in, as every runtime holds them."""
        return (self.w_scale.astype(np.float32) * np.float32(self.mult)).astype(np.float32)

    def bias_or_zeros(self) -> np.ndarray:
        return self.bias if self.bias is not None else np.zeros(self.c_out, np.int32)


@_op("float_conv")
class FloatConv(_ConvGeometry):
    weight: np.ndarray               # float32 [O, I/g, kh, kw]
    bias: np.ndarray                 # float32 [O]
    relu_in: bool = False            # a ReLU on the input (a float layer's HWGQ position)
    mult: float = 1.0


@_op("requant")
class Requant(Attrs):
    pass


@_op("add")
class Add(Attrs):
    mult: float = 1.0


@_op("mul")
class Mul(Attrs):
    mult: float = 1.0


@_op("concat")
class Concat(Attrs):
    pass


@_op("depth_to_space")
class DepthToSpace(Attrs):
    blocksize: int
    mode: str = "CRD"                # PixelShuffle's channel order; DCR: block offset major

    def __post_init__(self):
        if self.mode not in ("CRD", "DCR"):
            raise ValueError(f"depth_to_space mode must be CRD or DCR, got {self.mode!r}")


@_op("tile")
class Tile(Attrs):
    times: int


@_op("max_pool")
class MaxPool(Attrs):
    kernel: int
    stride: int


@_op("crop")
class Crop(Attrs):
    pass


@_op("sigmoid")
class Sigmoid(Attrs):
    pass


@_op("adq_scale")
class AdqScale(Attrs):
    a: float
    c: float


@_op("pad")
class Pad(Attrs):
    pads: tuple[int, int]            # rows added above and below, columns left and right
    mode: str = "symmetric"          # mirrored with the edge repeated (MATLAB imresize's border)

    def __post_init__(self):
        if self.mode != "symmetric":
            raise ValueError(f"pad mode must be symmetric, got {self.mode!r}")


@_op("reinterpret")
class Reinterpret(Attrs):
    pass


@dataclass
class Node:
    op: str
    inputs: list[str]
    output: str
    attrs: Any
    name: str = ""

    def __post_init__(self):
        cls = OPS.get(self.op)
        if cls is None:
            raise UnsupportedOp(f"{self.name or self.output}: unknown IR operation {self.op!r}")
        if not isinstance(self.attrs, cls):
            raise TypeError(f"{self.name}: {self.op} takes {cls.__name__} attributes, got {type(self.attrs).__name__}")
        self.name = self.name or self.output


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

    def producer(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.output == name), None)

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def conv_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op in ("conv", "float_conv")]

    def ops(self) -> set[str]:
        return {n.op for n in self.nodes}

    def with_nodes(self, nodes: list[Node], tensors: dict[str, Tensor] | None = None) -> "Graph":
        """A new graph with ``nodes`` (and ``tensors``); this one is left as it is."""
        return Graph(dict(tensors if tensors is not None else self.tensors), list(nodes), self.input, self.output,
                     self.scale, dict(self.metadata))


def check_dispatch(table: Mapping[str, Any], owner: str, refuses: tuple[str, ...] = ()) -> None:
    """A dispatch table must name every registered operation, or say it refuses it.

    Run at import time by every executor and serializer, so that a new operation cannot
    reach one that silently lacks it."""
    names = set(table) | set(refuses)
    missing = sorted(set(OPS) - names)
    unknown = sorted(names - set(OPS))
    if missing or unknown:
        raise RuntimeError(f"{owner}: dispatch table out of step with ir.OPS "
                           f"(missing {missing or 'none'}, unknown {unknown or 'none'})")


def refuse(owner: str, node: Node, why: str = "") -> None:
    raise UnsupportedOp(f"{owner} cannot take operation {node.op!r} ({node.name})" + (f": {why}" if why else ""))
