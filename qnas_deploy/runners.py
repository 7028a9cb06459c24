"""Open any model file the product makes as a runner (see ``infer.py``).

``.pt`` checkpoints run the fake-quantized PyTorch model; exported ``.onnx`` and
``.tflite`` files run in onnxruntime and LiteRT through their exporters' runners.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput
from .infer import Runner, min_input_size, torch_runner


@dataclass
class OpenedModel:
    path: str
    scale: int
    run: Runner
    description: str
    min_size: int = 1
    spec: object = None


def open_model(path: str, device: str = "cpu", **options) -> OpenedModel:
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise BadInput(f"{p}: no such model file")
    if suffix in (".pt", ".pth", ".ckpt"):
        from .checkpoint import load_checkpoint

        ck = load_checkpoint(p)
        return OpenedModel(str(p), ck.spec.scale, torch_runner(ck.model, device),
                           f"{ck.spec.name or p.stem} (PyTorch fake-quant)", min_input_size(ck.spec), ck.spec)
    if suffix == ".onnx":
        from .exporters.onnx_runner import open_onnx

        return open_onnx(p, **options)
    if suffix == ".tflite":
        from .exporters.tflite_runner import open_tflite

        return open_tflite(p, **options)
    raise BadInput(f"{p}: unknown model file type {suffix or '(none)'} (expected .pt, .onnx or .tflite)")
