"""An opened model file: its runner with what a caller needs to feed it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]   # uint8 HxWx3 LR image -> uint8 upscaled image


def grey_aware(run: Runner) -> Runner:
    """Accept ``HxW`` grey images too: the network sees them as RGB, the result is grey again."""
    def wrapped(lr: np.ndarray) -> np.ndarray:
        if lr.ndim == 2:
            out = run(np.repeat(lr[..., None], 3, axis=2)).astype(np.float64).mean(axis=2)
            return np.clip(np.round(out), 0, 255).astype(np.uint8)
        return run(lr)
    return wrapped


@dataclass
class OpenedModel:
    path: str
    scale: int
    run: Runner
    description: str
    min_size: int = 1
    spec: object = None
    weights: str | None = None    # an exported file's ``weights`` export option: "initialised" or a checkpoint


def check_trained(model: OpenedModel) -> None:
    """Refuse a file exported without trained weights: its output is noise, and a PNG or a
    score of noise with exit 0 looks like a result. Latency work never comes here."""
    from ..errors import BadInput

    if model.weights == "initialised":
        name = Path(model.path).name
        raise BadInput(f"{model.path} was exported without trained weights, so it outputs noise: export the "
                       f"trained checkpoint (qnas-deploy export model.pt -o {name}, or export SPEC "
                       f"--weights model.pt), or pass --allow-initialised to run it anyway")


def opened(path: str | Path, meta: dict[str, str], make_run: Callable[[], Runner], label: str) -> OpenedModel:
    """``path`` opened from its qnas.* metadata; ``make_run`` is called once that is known
    good, so that a file of another producer says so before a runtime's own error does."""
    from ..errors import BadInput
    from ..infer import min_input_size
    from ..spec import from_dict

    if "qnas.scale" not in meta:
        raise BadInput(f"{path}: not a qnas-deploy export (no qnas.scale metadata)")
    spec = from_dict(json.loads(meta["qnas.found_json"])) if "qnas.found_json" in meta else None
    weights = json.loads(meta.get("qnas.export_options", "{}")).get("weights")
    return OpenedModel(str(path), int(meta["qnas.scale"]), make_run(), f"{Path(path).name} ({label})",
                       min_input_size(spec) if spec else 1, spec, weights)
