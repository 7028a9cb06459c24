"""OpenVINO (CPU plugin): compiled models, image runners and raw timed calls of ``.onnx`` files.

OpenVINO reads the QDQ ONNX files the exporter writes for onnxruntime: its ONNX frontend
turns each QuantizeLinear into a FakeQuantize, its low-precision transformations move the
dequantisation past the convolutions (integer u8 x i8 convs) and fold the scales into the
FakeQuantize ranges, and the CPU plugin fuses the FakeQuantize, and where it can an Add,
into the conv as oneDNN post-ops.

The configuration pins what changes results: ``INFERENCE_PRECISION_HINT`` f32 (on CPUs
with AVX512-BF16 or AMX the default is bf16, which changes every float operation between
the integer convs: resize, sigmoid, adds), ``EXECUTION_MODE_HINT`` ACCURACY, no dynamic
quantization, no denormal flushing, one stream, and ``INFERENCE_NUM_THREADS`` (results are
the same for any thread count). The model is reshaped to the static shape of each input
size it is given (compiled once per size), as LiteRT's interpreter is resized.

Nothing here imports PyTorch (``open_openvino`` does, for the spec's minimum input size),
nor the ``onnx`` package: the metadata comes from OpenVINO's own reading of the file.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from ..errors import BadInput, QnasError


def int8_dot_product() -> bool:
    """Whether this x86 CPU has VNNI (or AMX): there OpenVINO's int8 convs add products into
    int32; without it, pairs into int16 with saturation (``passes/pair_safe.py``)."""
    info = Path("/proc/cpuinfo")
    flags = next((l.split(":", 1)[1].split() for l in info.read_text().splitlines() if l.startswith("flags")),
                 []) if info.is_file() else []
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def module():
    """The ``openvino`` package, or one clear error where it is not installed."""
    try:
        return importlib.import_module("openvino")
    except ImportError:
        raise QnasError("openvino is not installed: pip install openvino") from None


def config(threads: int | None = None) -> dict:
    """The CPU plugin properties every compiled model gets (see the module docstring)."""
    ov = module()
    props = importlib.import_module("openvino.properties")
    hints = importlib.import_module("openvino.properties.hint")
    cfg = {
        hints.inference_precision: ov.Type.f32,
        hints.execution_mode: hints.ExecutionMode.ACCURACY,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        hints.dynamic_quantization_group_size: 0,
        props.num_streams: 1,
        "CPU_DENORMALS_OPTIMIZATION": False,
    }
    if threads:
        cfg[props.inference_num_threads] = int(threads)
    return cfg


_CORE = None


def core():
    global _CORE
    if _CORE is None:
        _CORE = module().Core()
    return _CORE


def read(path: str | Path):
    """The file as an OpenVINO model (not compiled), or one line of error."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such model file")
    try:
        return core().read_model(str(p))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises its own exception types
        raise BadInput(f"{path}: OpenVINO cannot read it ({str(e).strip().splitlines()[0]})") from None


def compile_model(model, threads: int | None = None, shape: tuple[int, ...] | None = None, name: str = "the model"):
    """``model`` (from :func:`read`) compiled for the CPU, reshaped first to ``shape`` when given."""
    if shape is not None:
        model = model.clone()
        model.reshape({model.inputs[0].get_any_name(): list(shape)})
    try:
        return core().compile_model(model, "CPU", config(threads))
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"{name}: OpenVINO cannot compile it ({str(e).strip().splitlines()[0]})") from None


def compiled(path: str | Path, threads: int | None = None, shape: tuple[int, ...] | None = None):
    """``path`` compiled for the CPU (at the static input ``shape`` when given)."""
    return compile_model(read(path), threads, shape, str(path))


def metadata(model) -> dict[str, str]:
    """The ONNX file's metadata entries: OpenVINO keeps them in ``rt_info['framework']``."""
    rt = model.get_rt_info()
    if "framework" not in rt:
        return {}
    framework = rt["framework"]
    if hasattr(framework, "astype"):  # an OVAny (it depends on how the map was reached)
        framework = framework.astype(dict)
    return {str(k): v.astype(str) if hasattr(v, "astype") else str(v) for k, v in framework.items()}


def file_metadata(path: str | Path) -> dict[str, str]:
    return metadata(read(path))


class OpenVinoModelRunner:
    """Callable: uint8 HxWx3 LR image -> uint8 upscaled image, through one compiled model
    per input size (the model reshaped to that static size)."""

    def __init__(self, model, threads: int | None = None, name: str = "the model"):
        self.model, self.threads, self.name = model, threads, name
        self.as_float = metadata(model).get("qnas.io") == "float"
        self._compiled: dict[tuple[int, ...], object] = {}
        self.shape: tuple[int, ...] | None = None
        self.request = None

    def _fit(self, shape: tuple[int, ...]):
        if shape not in self._compiled:
            self._compiled[shape] = compile_model(self.model, self.threads, shape, self.name)
        self.request = self._compiled[shape].create_infer_request()
        self.shape = shape

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        if self.shape != (1, 3, h, w):  # compared here: this call is what gets timed
            self._fit((1, 3, h, w))
        x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None])
        if self.as_float:
            x = x.astype(np.float32) / np.float32(255)
        y = self.request.infer([x])[0]
        y = np.asarray(y)[0]
        if self.as_float:
            y = np.clip(np.rint(y * 255), 0, 255)
        return np.ascontiguousarray(y.transpose(1, 2, 0)).astype(np.uint8)


def image_runner(path: str | Path, threads: int | None = None) -> OpenVinoModelRunner:
    return OpenVinoModelRunner(read(path), threads, str(path))


def open_openvino(path: str | Path, threads: int | None = None, **_):
    from . import RUNTIMES
    from .opened import opened

    model = read(path)
    label = RUNTIMES["openvino"].label if "openvino" in RUNTIMES else "OpenVINO CPU"
    return opened(path, metadata(model), lambda: OpenVinoModelRunner(model, threads, str(path)), label)


# ONNX element types of the inputs the exporters write, as OpenVINO names them.
_DTYPES = {"u8": np.uint8, "i8": np.int8, "f32": np.float32}


def timed_call(path: str | Path, shape: tuple[int, ...], threads: int | None, rng: np.random.Generator):
    """One raw inference of ``path`` (compiled at the static ``shape``, NCHW) on a random input, as a closure to time."""
    from .timing import random_input

    model = read(path)
    dtype = _DTYPES.get(model.inputs[0].get_element_type().get_type_name(), np.float32)
    request = compile_model(model, threads, tuple(shape), str(path)).create_infer_request()
    x = random_input(rng, dtype, tuple(shape))
    return lambda: request.infer([x])
