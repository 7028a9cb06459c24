"""The inference runtimes exported files run in: one ``Runtime`` record each, one registry.

A runtime is named as results and the command line name it (``litert-xnnpack``), runs
one file type (``.onnx``, ``.tflite``), and reproduces the arithmetic of one export
target (``exporters``' target table), which the parity benchmark checks it against. It
opens a file as an image runner (uint8 ``HxWx3`` in, uint8 upscaled out) and as a raw
timed call (``timing``). Importing this package imports no PyTorch and no runtime: each
runtime's own package is imported when a file is first opened in it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from . import litert, onnxruntime, openvino
from .opened import OpenedModel, Runner, grey_aware

__all__ = ["Runtime", "RUNTIMES", "OpenedModel", "Runner", "grey_aware", "runtimes_for", "open_model", "read_metadata",
           "file_options"]


@dataclass(frozen=True)
class Runtime:
    name: str                     # in results, JSON keys (``f"{name}_ms"``) and the command line
    suffix: str                   # the file type it runs
    target: str                   # the export target whose arithmetic it reproduces
    label: str                    # for people: model descriptions and parity rows
    kernels: str | None           # LiteRT's kernel set, what --tflite-kernels picks; None: the only one
    layout: str                   # the raw input tensor's layout, "NCHW" or "NHWC"
    _open: Callable[..., OpenedModel] = field(repr=False, compare=False)
    _image_runner: Callable[..., Runner] = field(repr=False, compare=False)
    _timed_call: Callable[..., Callable[[], object]] = field(repr=False, compare=False)
    _metadata: Callable[[Path], dict[str, str]] = field(repr=False, compare=False)

    def open(self, path: str | Path, threads: int | None = None) -> OpenedModel:
        """``path`` with its scale, spec and description (imports PyTorch: the spec's minimum size)."""
        return self._open(path, threads)

    def image_runner(self, path: str | Path, threads: int | None = None) -> Runner:
        """uint8 HxWx3 LR image -> uint8 upscaled image, with the runtime alone (no PyTorch)."""
        return self._image_runner(path, threads)

    def timed_call(self, path: str | Path, shape: tuple[int, ...], threads: int | None = None, rng=None):
        """A closure that runs ``path`` once on a random input of ``shape`` (in ``layout``)."""
        import numpy as np

        return self._timed_call(path, tuple(shape), threads, rng if rng is not None else np.random.default_rng(0))

    def input_shape(self, height: int, width: int, channels: int = 3) -> tuple[int, int, int, int]:
        return (1, channels, height, width) if self.layout == "NCHW" else (1, height, width, channels)


def _litert(kernels: str, label: str) -> Runtime:
    return Runtime(f"litert-{kernels}", ".tflite", f"litert-{kernels}", label, kernels, "NHWC",
                   partial(litert.open_tflite, kernels=kernels), partial(litert.image_runner, kernels=kernels),
                   partial(litert.timed_call, kernels=kernels), litert.file_metadata)


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("onnxruntime", ".onnx", "onnxruntime", "onnxruntime", None, "NCHW", onnxruntime.open_onnx,
            onnxruntime.image_runner, onnxruntime.timed_call, onnxruntime.file_metadata),
    # The ONNX file in onnxruntime Mobile's ORT format (``export --format ort``).
    Runtime("onnxruntime-ort", ".ort", "onnxruntime", "onnxruntime (ORT format)", None, "NCHW",
            partial(onnxruntime.open_onnx, runtime="onnxruntime-ort"), onnxruntime.image_runner,
            onnxruntime.timed_call, onnxruntime.file_metadata),
    # The same .onnx file without onnxruntime's NHWC layout transform (the same kernels'
    # arithmetic, another memory layout); asked for by name, as bench latency compares them.
    Runtime("onnxruntime-nchw", ".onnx", "onnxruntime", "onnxruntime (no NHWC transform)", None, "NCHW",
            partial(onnxruntime.open_onnx, runtime="onnxruntime-nchw", nhwc=False),
            partial(onnxruntime.image_runner, nhwc=False), partial(onnxruntime.timed_call, nhwc=False),
            onnxruntime.file_metadata),
    # The same .onnx file; asked for by name (``onnx_runtimes``), not run by default.
    Runtime("openvino", ".onnx", "openvino", "OpenVINO CPU", None, "NCHW", openvino.open_openvino,
            openvino.image_runner, openvino.timed_call, openvino.file_metadata),
    _litert("xnnpack", "LiteRT + XNNPACK"),
    _litert("builtin", "LiteRT builtin"),
    _litert("builtin-ref", "LiteRT reference kernels"),
)}

_SUFFIXES = {r.suffix for r in RUNTIMES.values()}
_CHECKPOINTS = (".pt", ".pth", ".ckpt")


def runtimes_for(path: str | Path, tflite_kernels=("xnnpack", "builtin"), onnx_runtimes=("onnxruntime",)) -> list[Runtime]:
    """The runtimes that run ``path`` (by its suffix): LiteRT with the kernel sets asked for,
    the ONNX runtimes asked for."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise BadInput(f"{path}: expected an exported .onnx, .ort or .tflite file")
    return [r for r in RUNTIMES.values() if r.suffix == suffix
            and (r.kernels in tflite_kernels if r.kernels else r.suffix != ".onnx" or r.name in onnx_runtimes)]


def open_model(path: str | Path, device: str = "cpu", threads: int | None = None, xnnpack: bool = True,
               **_) -> OpenedModel:
    """Any model file the product makes: a ``.pt`` checkpoint runs the fake-quantized PyTorch
    model on ``device``; ``.onnx`` and ``.tflite`` run in onnxruntime and LiteRT (XNNPACK
    unless ``xnnpack=False``); ``.ort`` in onnxruntime."""
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise BadInput(f"{p}: no such model file")
    if suffix in _CHECKPOINTS:
        from ..checkpoint import load_checkpoint
        from ..infer import min_input_size, torch_runner

        ck = load_checkpoint(p)
        return OpenedModel(str(p), ck.spec.scale, torch_runner(ck.model, device),
                           f"{ck.spec.name or p.stem} (PyTorch fake-quant)", min_input_size(ck.spec), ck.spec)
    if suffix not in _SUFFIXES:
        raise BadInput(f"{p}: unknown model file type {suffix or '(none)'} (expected .pt, .onnx, .ort or .tflite)")
    return runtimes_for(p, ("xnnpack",) if xnnpack else ("builtin",))[0].open(p, threads)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata entries (``qnas.*``) of an exported ``.onnx``, ``.ort`` or ``.tflite`` file."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such model file")
    return runtimes_for(p)[0]._metadata(p)


def file_options(path: str | Path) -> dict:
    """What an exported file says it was made from: ``found`` (its found.json) and
    ``options`` (its export options)."""
    meta = read_metadata(path)
    if "qnas.found_json" not in meta:
        raise BadInput(f"{path}: not a qnas-deploy export (no qnas.found_json metadata)")
    return {"found": json.loads(meta["qnas.found_json"]),
            "options": json.loads(meta.get("qnas.export_options", "{}"))}
