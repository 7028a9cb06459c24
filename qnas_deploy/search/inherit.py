"""Start training a found architecture from the weights its search already trained.

The supernet is the space's network with every searchable layer replaced by a mixed
layer (``supernet.py``); the found architecture keeps, per layer, one operation of it.
Its convolutions are that operation's shared weights (``san``, ``shared``) or the chosen
(operation, bits) edge (``independent``); every other tensor (first and last convs, ADQ,
the tensor quantizers' ranges) is the supernet's own. Step sizes of the weight
quantizers start from the inherited weights, as they do from scratch. A layer narrower
than the supernet's (a width path of the one-shot supernet) takes the leading channels,
the slice the supernet trained it as.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import BadInput
from ..spec import ArchSpec
from .config import SearchConfig
from .run import _load_state, checkpoint_path
from .supernet import Supernet


def _leading(src: torch.Tensor, dst: torch.Tensor | None) -> torch.Tensor:
    """The leading slice of ``src`` of ``dst``'s shape (itself where they agree or cannot)."""
    if dst is None or src.shape == dst.shape or src.dim() != dst.dim() or \
            any(d > s for s, d in zip(src.shape, dst.shape)):
        return src
    return src[tuple(slice(0, d) for d in dst.shape)]


def load_supernet(found: str | Path) -> Supernet:
    """The trained supernet of the search that wrote ``found`` (its ``.search.pt`` beside it)."""
    ck = checkpoint_path(found)
    if not ck.is_file():
        raise BadInput(f"--init {found}: no search checkpoint beside it ({ck.name}); "
                       "--init takes the found.json a search wrote")
    st = _load_state(ck)
    raw = json.loads(st["config"])
    raw["bits"] = tuple(raw["bits"])
    cfg = SearchConfig(**raw)
    net = Supernet(cfg.space, cfg.bits, cfg.mode, cfg.channels, cfg.blocks, cfg.scale, anchor=cfg.anchor)
    net.load_state_dict(st["model"])
    return net


def inherit_supernet_weights(model: nn.Module, spec: ArchSpec, found: str | Path) -> int:
    """Copy into ``model`` (built from ``spec``) the supernet weights of its chosen path;
    returns the number of tensors copied. ``spec`` must be of the supernet's space, sizes
    and anchor, with an operation the search offered in every layer."""
    return inherit_from(model, spec, load_supernet(found), f"--init {found}")


def inherit_from(model: nn.Module, spec: ArchSpec, net: Supernet, what: str = "supernet") -> int:
    """:func:`inherit_supernet_weights` from a supernet in memory. In ``shared`` mode the
    chosen bit width's quantizer state (HWGQ sigma, LSQ step) comes along."""
    t = net.template
    for f in ("space", "scale", "channels", "blocks", "anchor"):
        if getattr(spec, f) != getattr(t, f):
            raise BadInput(f"{what}: the supernet's {f} is {getattr(t, f)!r}, the architecture's "
                           f"{getattr(spec, f)!r}")
    target = model.state_dict()
    src = net.net.state_dict()
    copied = {}
    for k, v in target.items():
        if not k.startswith("layers.") and k in src and src[k].shape == v.shape:
            copied[k] = src[k]
    for layer in spec.layers:
        key = layer.name.replace(".", "_")
        mixed = net.mixed[key]
        if layer.op not in mixed.ops:
            raise BadInput(f"{what}: layer {layer.name} has operation {layer.op}, which the search "
                           f"did not offer ({', '.join(mixed.ops)})")
        i = mixed.ops.index(layer.op)
        j = mixed.bits.index(layer.w_bits) if layer.w_bits in mixed.bits else len(mixed.bits) - 1
        if mixed.mode == "independent":
            for name, v in mixed.edges[i][j].state_dict().items():
                copied[f"layers.{key}.{name}"] = v
            continue
        for c, conv in enumerate(mixed.edges[i].convs):
            for name, v in (("weight", conv.weight), ("bias", conv.bias)):
                copied[f"layers.{key}.{c}.{name}"] = _leading(v.detach(), target.get(f"layers.{key}.{c}.{name}"))
            if mixed.mode == "shared" and layer.w_bits in mixed.bits:
                for prefix, q in (("act_quant", conv.act_q[j]), ("weight_quant", conv.weight_q[j])):
                    for name, v in q.state_dict().items():
                        k = f"layers.{key}.{c}.{prefix}.{name}"
                        copied[k] = _leading(v, target.get(k))
    missing = [k for k in copied if k not in target or target[k].shape != copied[k].shape]
    if missing:
        raise BadInput(f"{what}: the supernet's {missing[0]} does not fit the architecture")
    with torch.no_grad():
        for k, v in copied.items():
            target[k].copy_(v)
    return len(copied)
