"""The numpy reference executor of the integer graph: the golden model of every parity test.

It runs a graph in one of the arithmetics of ``arithmetic/``: ``pytorch`` (exact: what the
fake-quant model computes, the meaning of the canonical graph) or the arithmetic of a
target's runtime, on that target's lowered graph (``targets.py``), so that each runtime is
checked against what its own file holds.
"""
from __future__ import annotations

import numpy as np

from .arithmetic import exact, litert, onnxruntime, openvino
from .ir import Graph

ARITHMETIC = {
    "pytorch": exact.KERNELS,
    "onnxruntime": onnxruntime.KERNELS,
    "litert-xnnpack": litert.XNNPACK,
    "litert-builtin": litert.BUILTIN,
    "litert-builtin-aarch64": litert.BUILTIN_AARCH64,
    "litert-xnnpack-aarch64": litert.XNNPACK_AARCH64,
    "litert-builtin-ref": litert.BUILTIN_REF,
    "openvino": openvino.KERNELS,
}


def run(graph: Graph, image: np.ndarray, arithmetic: str | dict = "pytorch") -> np.ndarray:
    """Run ``graph`` on ``image``: uint8 ``[N, 3, H, W]`` (or ``[3, H, W]``); returns uint8.
    ``arithmetic``: a name of :data:`ARITHMETIC`, or a kernel table of one's form."""
    squeeze = image.ndim == 3
    values = run_tensors(graph, image[None] if squeeze else image, arithmetic)
    out = exact.to_uint8(graph.tensor(graph.output), values[graph.output])
    return out[0] if squeeze else out


def run_tensors(graph: Graph, image: np.ndarray, arithmetic: str | dict = "pytorch") -> dict[str, np.ndarray]:
    """Every tensor's value (integers for quantized tensors), for debugging and tests."""
    if isinstance(arithmetic, dict):
        kernels = arithmetic
    elif arithmetic in ARITHMETIC:
        kernels = ARITHMETIC[arithmetic]
    else:
        raise ValueError(f"arithmetic must be one of {tuple(ARITHMETIC)}, got {arithmetic!r}")
    values = {graph.input: exact.to_input(graph.tensor(graph.input), image)}
    for node in graph.nodes:
        values[node.output] = kernels[node.op](graph, node, values)
    return values


def runner(graph: Graph, arithmetic: str | dict = "pytorch"):
    """A runner (``infer.py``): uint8 HxWx3 image in, uint8 upscaled image out."""
    def run_one(lr: np.ndarray) -> np.ndarray:
        y = run(graph, np.ascontiguousarray(lr.transpose(2, 0, 1)), arithmetic)
        return np.ascontiguousarray(y.transpose(1, 2, 0))
    return run_one
