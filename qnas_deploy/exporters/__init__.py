"""Exporters: one lowering to an integer graph (``lower``), a numpy reference executor of
that graph (``reference``), and serializers (``onnx``; ``tflite``) with their runners."""
