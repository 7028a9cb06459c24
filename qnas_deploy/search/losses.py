"""The alpha loss terms of QuantNAS (section III-H, appendix G): pure functions."""
from __future__ import annotations

import math

import torch


def expected_bitops(alphas: list[torch.Tensor], macs: list[torch.Tensor], bits: tuple[int, ...]) -> torch.Tensor:
    """Eq. 8: ``sum_l sum_i sum_b alpha_ib * b^2 * F(o_i, x_l)`` (``b^2 F`` is FLOPs-like
    for b = 32, so full-precision search penalises FLOPs with the same code)."""
    b2 = torch.tensor([float(b * b) for b in bits])
    return sum((a * (m[:, None] * b2[None, :])).sum() for a, m in zip(alphas, macs))


def uniform_bitops(macs: list[torch.Tensor], bits: tuple[int, ...]) -> float:
    """Eq. 8 at uniform alphas: the normaliser that makes ``Lcq`` 1.0 at initialisation."""
    uniform = [torch.full((len(m), len(bits)), 1.0 / (len(m) * len(bits))) for m in macs]
    return float(expected_bitops(uniform, macs, bits))


def entropy(alphas: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 9: the sum over layers of the entropy of each layer's alphas."""
    return sum(-(a * torch.log(a.clamp_min(1e-12))).sum() for a in alphas)


def entropy_weight(epoch: float, coefficient: float, warmup: int = 2) -> float:
    """``mu(t)`` (appendix G, Figure 11): zero for the first ``warmup`` epochs, then the
    initial coefficient times a product of a linear and a log factor of the epochs since."""
    s = epoch - warmup
    if s <= 0:
        return 0.0
    return coefficient * s * math.log1p(s)
