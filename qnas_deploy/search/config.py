"""The settings of one search, checked when they are made.

Every caller (the CLI, the demo, benchmarks, code) gets the same one-line ``BadInput``
before a supernet is built or an image read. The settings are frozen: a checkpoint records
them, and ``--resume`` refuses a run whose settings differ, so a search must not change
them on the way (``dataclasses.replace`` makes a changed copy).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from ..errors import BadInput

SEARCH_BITS = (2, 4, 8, 32)
# The fields ``qnas-deploy search`` sets from an option: errors name the option, the rest the field.
_OPTIONS = ("space", "bits", "mode", "penalty", "entropy", "epochs", "iters", "batch", "patch", "channels", "anchor",
            "latency_backend")


@dataclass(frozen=True)
class SearchConfig:
    space: str = "basic"
    bits: tuple[int, ...] = (4, 8)
    mode: str = "san"
    penalty: float = 1e-3          # eta
    entropy: float = 1e-4          # initial coefficient of mu(t) (appendix G, quantized search)
    epochs: int = 20
    iters: int = 500               # iterations per epoch
    batch: int = 16
    patch: int = 32                # LR patch side
    lr: float = 1e-3
    alpha_lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 3e-7
    channels: int | None = None
    blocks: int | None = None
    scale: int = 4
    seed: int = 0
    data: str = "embedded"
    latency_table: str | None = None   # bench bitops --table-json: measured ms in place of BitOps
    latency_backend: str = "onnxruntime"
    anchor: str = "none"               # "nearest" or "bicubic": the Basic space's input anchor (spec.ANCHORS)

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_numbers(self)
        # A list or numpy integers would pass the checks but not hashing or the checkpoint's JSON.
        object.__setattr__(self, "bits", tuple(int(b) for b in self.bits))
        if self.latency_table:
            _check_table(self)

    @classmethod
    def quick(cls, **kw) -> "SearchConfig":
        """Finishes in minutes on two CPU cores: short epochs of small patches, a narrower
        supernet, and learning rates raised so that 72 steps move the alphas visibly."""
        base = dict(epochs=6, iters=12, batch=4, patch=16, channels=QUICK_CHANNELS.get(kw.get("space"), 12),
                    blocks=2, entropy=1e-2, lr=2e-2, alpha_lr=3e-2)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)


# The quick supernet's width where 12 is not one the space takes (mobile: multiples of 8).
QUICK_CHANNELS = {"mobile": 16}


def _name(field: str) -> str:
    return "--" + field.replace("_", "-") if field in _OPTIONS else field


def _check_choices(cfg: SearchConfig) -> None:
    from ..spaces import SPACES
    from ..spec import ANCHORS, SCALES
    from .supernet import MODES

    for field, allowed in (("space", tuple(SPACES)), ("mode", MODES), ("anchor", ANCHORS), ("scale", SCALES)):
        if getattr(cfg, field) not in allowed:
            raise BadInput(f"{_name(field)} must be one of {', '.join(map(str, allowed))}, got {getattr(cfg, field)!r}")
    if not isinstance(cfg.bits, (tuple, list)):
        raise BadInput(f"--bits must be a tuple of bit widths, got {cfg.bits!r}")
    if not cfg.bits or any(b not in SEARCH_BITS for b in cfg.bits) or len(set(cfg.bits)) < len(cfg.bits):
        raise BadInput(f"--bits must be a subset of 2,4,8,32, got {','.join(map(str, cfg.bits))}")
    if not isinstance(cfg.latency_backend, str) or not cfg.latency_backend:
        raise BadInput(f"--latency-backend must name a backend of the latency table, got {cfg.latency_backend!r}")


def _check_numbers(cfg: SearchConfig) -> None:
    for field in ("epochs", "iters", "batch", "patch", "channels", "blocks"):
        v = getattr(cfg, field)
        if v is None and field in ("channels", "blocks"):
            continue  # the space's default
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise BadInput(f"{_name(field)} must be an integer >= 1, got {v!r}")
    for field, positive in (("penalty", False), ("entropy", False), ("weight_decay", False), ("momentum", False),
                            ("lr", True), ("alpha_lr", True)):
        v = getattr(cfg, field)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0 or \
                (positive and v == 0):
            raise BadInput(f"{_name(field)} must be a finite number {'>' if positive else '>='} 0, got {v!r}")
    if cfg.momentum >= 1:
        raise BadInput(f"momentum must be below 1, got {cfg.momentum!r}")


def _check_table(cfg: SearchConfig) -> None:
    """The table is readable, for this space, and has timings for ``latency_backend``; the
    backends are the table's own names, whatever spelling the table was measured under."""
    from ..cost.latency import load

    table = load(cfg.latency_table)
    if table.get("space") != cfg.space:
        raise BadInput(f"{cfg.latency_table}: a latency table for the {table.get('space')!r} space, "
                       f"the search is over {cfg.space!r}")
    backends = table.get("backends") or []
    if cfg.latency_backend not in backends:
        raise BadInput(f"{cfg.latency_table}: latency table has no {cfg.latency_backend} timings "
                       f"(it has {', '.join(map(str, backends)) or 'none'})")
