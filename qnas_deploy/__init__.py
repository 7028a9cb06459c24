"""qnas-deploy: quantization-aware NAS for super-resolution, compiled to integer graphs."""
__version__ = "0.1.0"
