"""MACs, FLOPs and BitOps per layer for an LR input size (QuantNAS eq. 8 conventions).

For a convolution producing ``C_out x H_out x W_out`` from ``C_in / groups`` input channels
with a ``kh x kw`` kernel: ``MACs = C_out * C_in/groups * kh * kw * H_out * W_out`` (bias
and elementwise ops are not counted, as in the paper), ``FLOPs = 2 * MACs`` and
``BitOps = MACs * b_w * b_a`` (a float layer counts 32 x 32). The paper reports BitOps at
a 32x32 LR input and FLOPs at 256x256; those are the defaults.

Costs come from the model that is actually built: one pass in which every quantized
convolution records its shapes and returns zeros instead of computing (so 256x256 costs
no more than 32x32), covering fixed layers (RFDN's ESA, fusions) as well.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from ..ops import QConv2d
from ..spaces import build_model

BITOPS_SIZE = (32, 32)
FLOPS_SIZE = (256, 256)


@dataclass(frozen=True)
class LayerCost:
    name: str
    op: str
    w_bits: int
    a_bits: int
    macs: int
    searchable: bool

    @property
    def bitops(self) -> int:
        return self.macs * self.w_bits * self.a_bits

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class CostReport:
    size: tuple[int, int]
    layers: tuple[LayerCost, ...]

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.layers)

    @property
    def bitops(self) -> int:
        return sum(l.bitops for l in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict:
        total = self.bitops or 1
        return {
            "size": list(self.size),
            "macs": self.macs, "flops": self.flops, "bitops": self.bitops,
            "layers": [dict(asdict(l), bitops=l.bitops, flops=l.flops, bitops_share=l.bitops / total)
                       for l in self.layers],
        }


def conv_macs(c_in: int, c_out: int, kernel: tuple[int, int], groups: int, out_hw: tuple[int, int]) -> int:
    return c_out * (c_in // groups) * kernel[0] * kernel[1] * out_hw[0] * out_hw[1]


@contextlib.contextmanager
def _shape_only(records: dict[int, int]):
    """Make every QConv2d record its MACs and return zeros of its output shape."""
    original = QConv2d.forward

    def forward(self, x, in_scale=None, out=None, mult=None):
        c = self.conv
        (ph, pw), d = c.pad, c.dilation
        ho = (x.shape[-2] + 2 * ph - d * (c.kernel[0] - 1) - 1) // c.stride + 1
        wo = (x.shape[-1] + 2 * pw - d * (c.kernel[1] - 1) - 1) // c.stride + 1
        records[id(self)] = records.get(id(self), 0) + conv_macs(c.c_in, c.c_out, c.kernel, c.groups, (ho, wo))
        return x.new_zeros(x.shape[0], c.c_out, ho, wo)

    QConv2d.forward = forward
    try:
        yield
    finally:
        QConv2d.forward = original


def _fixed_name(path: str) -> str:
    # Group a fixed sub-module's convs under one row: "blocks.0.esa.conv1" -> "blocks.0.esa".
    parts = path.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 and parts[-2] == "esa" else path


def layer_costs(spec, size: tuple[int, int] = BITOPS_SIZE, model: torch.nn.Module | None = None) -> CostReport:
    """Per-layer cost of ``spec`` for one LR image of ``size = (H, W)``."""
    model = model if model is not None else build_model(spec)
    records: dict[int, int] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _shape_only(records):
            model(torch.zeros(1, 3, *size))
    finally:
        model.train(was_training)
    rows: list[LayerCost] = []
    owned: set[int] = set()
    for layer in spec.layers:
        qop = model.layers[layer.name.replace(".", "_")]
        ids = [id(m) for m in qop.modules() if isinstance(m, QConv2d)]
        owned.update(ids)
        rows.append(LayerCost(layer.name, layer.op, layer.w_bits, layer.a_bits,
                              sum(records.get(i, 0) for i in ids), True))
    fixed: dict[str, list] = {}
    for path, m in model.named_modules():
        if isinstance(m, QConv2d) and id(m) not in owned:
            name = _fixed_name(path)
            row = fixed.setdefault(name, [0, m.w_bits, m.a_bits])
            row[0] += records.get(id(m), 0)
    rows += [LayerCost(name, "fixed", wb, ab, macs, False) for name, (macs, wb, ab) in fixed.items()]
    return CostReport(tuple(size), tuple(rows))


def summary(spec) -> dict[str, float]:
    """The cost figures stored in found.json: MACs and BitOps at 32x32, FLOPs at 256x256."""
    model = build_model(spec)
    small = layer_costs(spec, BITOPS_SIZE, model)
    big = layer_costs(spec, FLOPS_SIZE, model)
    return {"macs_32x32": small.macs, "bitops_32x32": small.bitops, "flops_256x256": big.flops}


def with_cost(spec):
    """``spec`` with its ``cost`` field filled in."""
    return spec.with_(cost=summary(spec))
