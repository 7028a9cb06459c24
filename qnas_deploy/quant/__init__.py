"""Quantizers (DESIGN.md section 4): pure math in ``functional``, modules in ``modules``."""
from . import functional
from .functional import fake_quant, hwgq, hwgq_step, int_range, quant_noise, round_ste
from .modules import FLOAT_BITS, HWGQAct, LSQWeightPerChannel, Uint8AffineTensor, quantizers_off

__all__ = [
    "functional", "fake_quant", "hwgq", "hwgq_step", "int_range", "quant_noise", "round_ste",
    "FLOAT_BITS", "HWGQAct", "LSQWeightPerChannel", "Uint8AffineTensor", "quantizers_off",
]
