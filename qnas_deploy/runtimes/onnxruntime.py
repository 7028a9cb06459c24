"""onnxruntime: sessions, image runners and raw timed calls of exported ``.onnx`` files
(and ``.ort`` files, onnxruntime Mobile's format of the same graph, which sessions load alike).

Nothing here imports PyTorch (``open_onnx`` does, for the spec's minimum input size):
``bench latency`` runs on a board that has only the runtime and this package.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from ..errors import BadInput, QnasError

# ONNX tensor types of the inputs the exporters write (uint8 or float images, int8 layers).
_DTYPES = {"tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(float)": np.float32}


def module():
    """The ``onnxruntime`` package, or one clear error where it is not installed."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise QnasError("onnxruntime is not installed: pip install onnxruntime") from None


def session(path: str | Path, threads: int | None = None, optimized_path: str | None = None,
            level: str = "all", nhwc: bool = True):
    """``nhwc=False``: without the layout transformer that runs integer convs in NHWC (it
    computes the same integers; ``bench latency`` times both)."""
    ort = module()
    so = ort.SessionOptions()
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[level]
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if optimized_path:
        so.optimized_model_filepath = str(optimized_path)
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=None if nhwc else ["NhwcTransformer"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise BadInput(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None


def metadata(sess) -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


def file_metadata(path: str | Path) -> dict[str, str]:
    # Unoptimised: only the metadata is wanted, not a session to run.
    return metadata(session(path, threads=1, level="none"))


class OnnxModelRunner:
    """Callable: uint8 HxWx3 LR image -> uint8 upscaled image, through one session."""

    def __init__(self, sess):
        self.sess = sess
        self.as_float = metadata(sess).get("qnas.io") == "float"

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None])
        if self.as_float:
            x = x.astype(np.float32) / np.float32(255)
        y = self.sess.run(None, {"input": x})[0][0]
        if self.as_float:
            y = np.clip(np.rint(y * 255), 0, 255)
        return np.ascontiguousarray(y.transpose(1, 2, 0)).astype(np.uint8)


def image_runner(path: str | Path, threads: int | None = None, nhwc: bool = True) -> OnnxModelRunner:
    return OnnxModelRunner(session(path, threads, nhwc=nhwc))


def open_onnx(path: str | Path, threads: int | None = None, runtime: str = "onnxruntime", nhwc: bool = True, **_):
    """``path`` (a ``.onnx``, or a ``.ort`` with ``runtime="onnxruntime-ort"``) opened in onnxruntime."""
    from . import RUNTIMES
    from .opened import opened

    sess = session(path, threads, nhwc=nhwc)
    return opened(path, metadata(sess), lambda: OnnxModelRunner(sess), RUNTIMES[runtime].label)


def timed_call(path: str | Path, shape: tuple[int, ...], threads: int | None, rng: np.random.Generator,
               nhwc: bool = True):
    """One raw ``run`` of ``path`` on a random input of ``shape``, as a closure to time."""
    from .timing import random_input

    sess = session(path, threads, nhwc=nhwc)
    inp = sess.get_inputs()[0]
    feed = {inp.name: random_input(rng, _DTYPES.get(inp.type, np.float32), shape)}
    return lambda: sess.run(None, feed)
