"""Example architectures shipped with the package; every command takes a zoo name for a path.

========================  ======================================================================
``basic_mixed``           Basic space in the spirit of QuantNAS Figure 18: 8-bit first layer,
                          upsample and last layer, 4-bit head.1, body and tail.0.
``basic_w8a8``            the same operations, uniform 8 bits.
``basic_w4a4``            the same operations, uniform 4 bits.
``basic_fp32``            the same operations in float (the FP32 reference for speed-ups).
``basic_mixed_anchor``    ``basic_mixed`` plus the nearest-neighbour input anchor.
``basic_mixed_bicubic``   ``basic_mixed`` plus the bicubic input anchor.
``basic_lrtail_bicubic``  ``basic_mixed_bicubic`` with its tail at LR (space ``basic_lrtail``).
``rfdn_mixed``            RFDN space, 4 blocks, 48 channels: 8-bit distillation, mixed refinement.
``espcn_w8a8``            an ESPCN-like three-layer baseline at 8 bits.
``mobile_w8a8``           mobile space (every conv at LR), 32 channels, bicubic anchor, 8 bits.
``mobile_mixed``          the same with 4-bit body layers.
========================  ======================================================================

Trained weights ship for some entries (``weights/NAME.pt``, made by
``benchmarks/train_zoo.py``, whose record says how): ``upscale``, ``eval`` and ``export``
use them when given the entry's name (``export --init`` keeps initialised weights).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import BadInput
from ..spec import ArchSpec, load, loads


def names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".json"))


def load_zoo(name: str) -> ArchSpec:
    if name not in names():
        raise BadInput(f"unknown zoo entry {name!r} (choose from {', '.join(names())})")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return loads(text, f"zoo:{name}")


def resolve(arg: str) -> ArchSpec:
    """A found.json path, or the name of a zoo entry."""
    if Path(arg).is_file():
        return load(arg)
    if arg in names():
        return load_zoo(arg)
    raise BadInput(f"{arg}: no such file, and not a zoo entry (zoo: {', '.join(names())})")


def shipped_weights(name: str) -> Path | None:
    """The trained checkpoint shipped for zoo entry ``name``, if there is one."""
    f = resources.files(__name__).joinpath("weights", f"{name}.pt")
    return Path(str(f)) if f.is_file() else None


def with_weights() -> list[str]:
    return [n for n in names() if shipped_weights(n) is not None]


def model_file(arg: str) -> str:
    """``arg`` if it is a file, else the shipped checkpoint of the zoo entry it names."""
    if Path(arg).is_file() or arg not in names():
        return arg
    w = shipped_weights(arg)
    if w is None:
        raise BadInput(f"zoo entry {arg} ships no trained weights (entries with weights: "
                       f"{', '.join(with_weights()) or 'none'}); train it (qnas-deploy train {arg} ...) and pass "
                       "the checkpoint")
    return str(w)
