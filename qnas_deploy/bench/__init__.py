"""Measurements users run on their models and machines: parity, latency, BitOps vs latency."""
