"""The arithmetic each runtime computes in, as numpy kernels per IR operation.

``exact`` is the fake-quant PyTorch model's (and so the canonical graph's meaning);
``onnxruntime`` and ``litert`` replace the kernels whose runtime rounds differently.
Each module's tables are checked against ``ir.OPS`` at import.
"""
