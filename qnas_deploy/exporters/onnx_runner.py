"""Run an exported ONNX file in onnxruntime as a runner (``infer.py``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import BadInput


def session(path: str | Path, threads: int | None = None, optimized_path: str | None = None,
            level: str = "all"):
    from ..runtimes import onnxruntime

    ort = onnxruntime()
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
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise BadInput(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None


def metadata(sess) -> dict[str, str]:
    return dict(sess.get_modelmeta().custom_metadata_map)


def open_onnx(path: str | Path, threads: int | None = None, **_):
    from ..infer import min_input_size
    from ..runners import OpenedModel
    from ..spec import from_dict

    sess = session(path, threads)
    meta = metadata(sess)
    if "qnas.scale" not in meta:
        raise BadInput(f"{path}: not a qnas-deploy export (no qnas.scale metadata)")
    scale = int(meta["qnas.scale"])
    spec = from_dict(json.loads(meta["qnas.found_json"])) if "qnas.found_json" in meta else None
    return OpenedModel(str(path), scale, OnnxModelRunner(sess), f"{Path(path).name} (onnxruntime)",
                       min_input_size(spec) if spec else 1, spec)


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
