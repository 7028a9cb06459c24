"""What an architecture costs: MACs, FLOPs and BitOps counted on the built model
(:mod:`.bitops`, re-exported here), and milliseconds predicted from a measured per-layer
latency table (:mod:`.latency`).

The re-exports load :mod:`.bitops` on first use rather than on import: it needs PyTorch,
and :mod:`.latency` must import without it (the latency-table timing children and boards
that only read a table load it).
"""
from __future__ import annotations

import importlib

__all__ = ["BITOPS_SIZE", "FLOPS_SIZE", "CostReport", "LayerCost", "conv_macs", "layer_costs", "summary",
           "with_cost"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".bitops", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
