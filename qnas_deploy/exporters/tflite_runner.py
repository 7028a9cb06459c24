"""Run an exported TFLite file in LiteRT as a runner (``infer.py``).

XNNPACK is on by default (LiteRT applies it to every op it supports); ``xnnpack=False``
runs the builtin kernels only. The interpreter is resized when an image of another
size comes, so one file serves every image size.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .tflite import read_metadata


def interpreter(path_or_bytes, threads: int | None = None, xnnpack: bool = True):
    from ai_edge_litert import interpreter as litert

    kind = litert.OpResolverType.AUTO if xnnpack else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    src = dict(model_content=bytes(path_or_bytes)) if isinstance(path_or_bytes, (bytes, bytearray)) \
        else dict(model_path=str(path_or_bytes))
    try:
        it = litert.Interpreter(num_threads=threads, experimental_op_resolver_type=kind, **src)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        name = "the model" if "model_content" in src else str(path_or_bytes)
        raise BadInput(f"{name}: LiteRT cannot load it ({str(e).splitlines()[0]})") from None
    return it


class TfliteModelRunner:
    """Callable: uint8 HxWx3 LR image -> uint8 upscaled image, through one interpreter."""

    def __init__(self, it, io: str):
        self.it, self.io = it, io
        self.inp = it.get_input_details()[0]
        self.out = it.get_output_details()[0]
        self.shape = tuple(self.inp["shape"])

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        if self.shape != (1, h, w, 3):
            self.it.resize_tensor_input(self.inp["index"], [1, h, w, 3])
            self.it.allocate_tensors()
            self.shape = (1, h, w, 3)
        x = lr[None]
        if self.io == "int8":
            x = (x.astype(np.int16) - 128).astype(np.int8)
        elif self.io == "float":
            x = x.astype(np.float32) / np.float32(255)
        self.it.set_tensor(self.inp["index"], np.ascontiguousarray(x))
        self.it.invoke()
        y = self.it.get_tensor(self.out["index"])[0]
        if self.io == "int8":
            y = (y.astype(np.int16) + 128)
        elif self.io == "float":
            y = np.rint(y * 255)
        return np.clip(y, 0, 255).astype(np.uint8)


def open_tflite(path: str | Path, threads: int | None = None, xnnpack: bool = True, **_):
    from ..infer import min_input_size
    from ..runners import OpenedModel
    from ..spec import from_dict

    data = Path(path).read_bytes()
    try:
        meta = read_metadata(data)
    except Exception:  # noqa: BLE001 - a corrupt flatbuffer raises anything
        raise BadInput(f"{path}: not a TFLite flatbuffer") from None
    if "qnas.scale" not in meta:
        raise BadInput(f"{path}: not a qnas-deploy export (no qnas.scale metadata)")
    it = interpreter(data, threads, xnnpack)
    spec = from_dict(json.loads(meta["qnas.found_json"])) if "qnas.found_json" in meta else None
    backend = "LiteRT + XNNPACK" if xnnpack else "LiteRT builtin"
    return OpenedModel(str(path), int(meta["qnas.scale"]), TfliteModelRunner(it, meta.get("qnas.io", "uint8")),
                       f"{Path(path).name} ({backend})", min_input_size(spec) if spec else 1, spec)
