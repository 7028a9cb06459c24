"""LiteRT: interpreters, image runners and raw timed calls of exported ``.tflite`` files.

``kernels`` picks LiteRT's kernel set: ``xnnpack`` (the default: XNNPACK takes every op
it supports), ``builtin`` (the optimized builtin kernels only) or ``builtin-ref`` (the
plain C++ reference kernels, the same on every CPU). The interpreter is resized when an input of another size
comes, so one file serves every image size. Nothing here imports PyTorch (``open_tflite``
does, for the spec's minimum input size).
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from ..errors import BadInput, QnasError


def module():
    """The ``interpreter`` module of the installed TFLite runtime: ``ai_edge_litert`` (LiteRT,
    the maintained successor) or, where only that is installed, the older ``tflite_runtime``;
    both have the same ``Interpreter`` and ``OpResolverType``."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise QnasError("no TFLite runtime: install ai-edge-litert (or tflite-runtime)")


KERNELS = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "builtin-ref": "BUILTIN_REF"}


def interpreter(path_or_bytes, threads: int | None = None, xnnpack: bool = True, kernels: str | None = None,
                name: str | None = None):
    """An allocated interpreter with ``kernels`` (default: ``xnnpack`` or, with
    ``xnnpack=False``, ``builtin``).

    LiteRT's C++ side writes ``INFO: Created TensorFlow Lite XNNPACK delegate`` to file
    descriptor 2 on the first allocation of a process, where it lands inside a progress
    bar: descriptor 2 goes to a temporary file while the interpreter is made, and any
    other line LiteRT wrote there is passed on to standard error afterwards.
    """
    import os
    import sys
    import tempfile

    litert = module()
    kind = getattr(litert.OpResolverType, KERNELS[kernels or ("xnnpack" if xnnpack else "builtin")])
    src = dict(model_content=bytes(path_or_bytes)) if isinstance(path_or_bytes, (bytes, bytearray)) \
        else dict(model_path=str(path_or_bytes))
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            it = litert.Interpreter(num_threads=threads, experimental_op_resolver_type=kind, **src)
            it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            name = name or ("the model" if "model_content" in src else str(path_or_bytes))
            raise BadInput(f"{name}: LiteRT cannot load it ({str(e).splitlines()[0]})") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        # On failure the exception's first line says it all; on success, warnings still show.
        rest = [l for l in captured.read().decode("utf-8", "replace").splitlines()
                if l.strip() and not l.startswith("INFO: Created TensorFlow Lite")]
    if rest:
        sys.stderr.write("\n".join(rest) + "\n")
    return it


def metadata_buffers(data: bytes) -> dict[str, bytes]:
    """The metadata buffers of a TFLite flatbuffer, by name (``TFLITE_METADATA``, ``qnas.*``)."""
    import tflite

    m = tflite.Model.GetRootAsModel(data, 0)
    out = {}
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        buf = m.Buffers(md.Buffer())
        out[md.Name().decode()] = buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    return out


def read_tflite_metadata(data: bytes) -> dict[str, str]:
    """The text metadata entries of a TFLite flatbuffer (name -> UTF-8 text); binary ones
    (the standard ``TFLITE_METADATA`` flatbuffer) are left out."""
    out = {}
    for name, raw in metadata_buffers(data).items():
        try:
            out[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def _metadata_of(path: str | Path, data: bytes) -> dict[str, str]:
    try:
        return read_tflite_metadata(data)
    except Exception:  # noqa: BLE001 - a corrupt flatbuffer raises anything
        raise BadInput(f"{path}: not a TFLite flatbuffer") from None


def file_metadata(path: str | Path) -> dict[str, str]:
    return _metadata_of(path, Path(path).read_bytes())


def _fit(it, shape: tuple[int, ...]) -> dict:
    """The input's details after resizing it to ``shape`` where it was allocated for another."""
    d = it.get_input_details()[0]
    if tuple(d["shape"]) != tuple(shape):
        it.resize_tensor_input(d["index"], list(shape))
        it.allocate_tensors()
        d = it.get_input_details()[0]
    return d


class TfliteModelRunner:
    """Callable: uint8 HxWx3 LR image -> uint8 upscaled image, through one interpreter."""

    def __init__(self, it, io: str):
        self.it, self.io = it, io
        self.inp = it.get_input_details()[0]
        self.out = it.get_output_details()[0]
        self.shape = tuple(self.inp["shape"])

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        if self.shape != (1, h, w, 3):  # compared here, not asked of LiteRT: this call is what gets timed
            self.inp = _fit(self.it, (1, h, w, 3))
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


def image_runner(path: str | Path, threads: int | None = None, kernels: str = "xnnpack") -> TfliteModelRunner:
    data = Path(path).read_bytes()
    io = _metadata_of(path, data).get("qnas.io", "uint8")
    return TfliteModelRunner(interpreter(data, threads, kernels=kernels, name=str(path)), io)


def open_tflite(path: str | Path, threads: int | None = None, kernels: str = "xnnpack", **_):
    from .opened import opened

    from . import RUNTIMES

    data = Path(path).read_bytes()
    meta = _metadata_of(path, data)
    return opened(path, meta, lambda: TfliteModelRunner(interpreter(data, threads, kernels=kernels, name=str(path)),
                                                        meta.get("qnas.io", "uint8")),
                  RUNTIMES[f"litert-{kernels}"].label)


def timed_call(path: str | Path, shape: tuple[int, ...], threads: int | None, rng: np.random.Generator,
               kernels: str = "xnnpack"):
    """One raw ``invoke`` of ``path`` on a random input of ``shape`` (NHWC), as a closure to time."""
    from .timing import random_input

    it = interpreter(path, threads, kernels=kernels)
    d = _fit(it, shape)
    x = random_input(rng, d["dtype"], tuple(d["shape"]))

    def run():
        it.set_tensor(d["index"], x)
        it.invoke()
    return run
