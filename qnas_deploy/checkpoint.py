"""Checkpoints: the spec, the weights and quantizer state, and the training record.

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)``: nothing in a model file is executed. The spec
is stored as its found.json document and validated on load like any found.json; the
state dict must then match the network that spec builds, key for key and shape for shape.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from ._io import atomic_path
from .errors import BadInput, SpecError
from .spaces import build_model
from .spec import ArchSpec, from_dict

FORMAT = "qnas-deploy/checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    spec: ArchSpec
    model: nn.Module
    calibrated: bool = False
    record: dict[str, Any] = field(default_factory=dict)   # training config, history, timings
    state: dict[str, Any] = field(default_factory=dict)    # optimizer, scheduler, RNG: for --resume


def save_checkpoint(path: str | Path, spec: ArchSpec, model: nn.Module, calibrated: bool = False,
                    record: dict | None = None, state: dict | None = None) -> None:
    doc = {"format": FORMAT, "version": VERSION, "producer": f"qnas-deploy {__version__}",
           "spec": spec.to_dict(), "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "calibrated": calibrated, "record": record or {}, "state": state or {}}
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)


def is_checkpoint_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".pt", ".pth", ".ckpt")


def load_checkpoint(path: str | Path, spec: ArchSpec | None = None, map_location: str = "cpu") -> Checkpoint:
    """Load and check a checkpoint; ``spec``, when given, must equal the stored one."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such checkpoint")
    if not zipfile.is_zipfile(p):
        raise BadInput(f"{p}: not a readable checkpoint (not a PyTorch zip archive)")
    try:
        doc = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise BadInput(f"{p}: refused to load: it holds objects other than tensors, numbers and "
                       f"strings, and checkpoints are loaded with weights_only=True") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, not a torch file, ...
        raise BadInput(f"{p}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInput(f"{p}: not a qnas-deploy checkpoint (no '{FORMAT}' format marker)")
    if int(doc.get("version", 0)) > VERSION:
        raise BadInput(f"{p}: checkpoint version {doc['version']} is newer than this qnas-deploy reads ({VERSION})")
    try:
        stored = from_dict(doc["spec"])
    except SpecError as e:
        raise SpecError(f"{p}: stored spec: {e}") from None
    if spec is not None and _arch_key(spec) != _arch_key(stored):
        raise BadInput(f"{p}: checkpoint does not match the spec given ({_first_difference(spec, stored)})")
    model = build_model(stored)
    load_weights(model, doc["model"], str(p))
    return Checkpoint(stored, model.eval(), bool(doc.get("calibrated")), doc.get("record", {}), doc.get("state", {}))


def load_weights(model: nn.Module, state: dict, source: str) -> None:
    """``load_state_dict`` with one-line errors naming the first mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise BadInput(f"{source}: weights do not match the spec's network ({what}; "
                       f"{len(missing)} missing, {len(extra)} unexpected)")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise BadInput(f"{source}: weights do not match the spec's network ({k}: shape "
                           f"{tuple(state[k].shape)}, the spec needs {tuple(v.shape)})")
    model.load_state_dict(state)


def _arch_key(spec: ArchSpec) -> dict:
    d = spec.to_dict()
    for k in ("name", "description", "cost", "search"):
        d.pop(k, None)
    return d


def _first_difference(a: ArchSpec, b: ArchSpec) -> str:
    da, db = _arch_key(a), _arch_key(b)
    for k in da:
        if k == "layers":
            for la, lb in zip(da[k], db[k]):
                if la != lb:
                    return f"layer {la['name']}: {la} in the spec, {lb} in the checkpoint"
            if len(da[k]) != len(db[k]):
                return f"{len(da[k])} layers in the spec, {len(db[k])} in the checkpoint"
        elif da[k] != db.get(k):
            return f"{k}: {da[k]!r} in the spec, {db.get(k)!r} in the checkpoint"
    return "they differ"
