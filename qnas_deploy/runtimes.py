"""Import the inference runtimes the exporters and benchmarks use, with one clear error.

TFLite: ``ai_edge_litert`` (LiteRT, the maintained successor) or, where only that is
installed, the older ``tflite_runtime``; both expose the same ``Interpreter`` class.
"""
from __future__ import annotations

import importlib

from .errors import QnasError


def tflite_interpreter_class():
    """The ``Interpreter`` class of the installed TFLite runtime."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(module).Interpreter
        except ImportError:
            continue
    raise QnasError("no TFLite runtime: install ai-edge-litert (or tflite-runtime)")


def onnxruntime():
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise QnasError("onnxruntime is not installed: pip install onnxruntime") from None
