"""The alpha loss terms of QuantNAS (section III-H, appendix G): pure functions."""
from __future__ import annotations

import math

import torch


def expected_bitops(alphas: list[torch.Tensor], macs: list[torch.Tensor], bits: tuple[int, ...]) -> torch.Tensor:
    """Eq. 8: ``sum_l sum_i sum_b alpha_ib * b^2 * F(o_i, x_l)`` (``b^2 F`` is FLOPs-like
    for b = 32, so full-precision search penalises FLOPs with the same code)."""
    return expected_cost(alphas, bitops_costs(macs, bits))


def bitops_costs(macs: list[torch.Tensor], bits: tuple[int, ...]) -> list[torch.Tensor]:
    """Per layer, eq. 8's ``b^2 * F(o_i, x_l)`` as an ``[operations, bits]`` matrix."""
    b2 = torch.tensor([float(b * b) for b in bits])
    return [m[:, None] * b2[None, :] for m in macs]


def expected_cost(alphas: list[torch.Tensor], costs: list[torch.Tensor]) -> torch.Tensor:
    """``sum_l sum_ib alpha_ib * cost_l[i, b]``: BitOps, or a latency table's milliseconds."""
    return sum((a * c.to(a.dtype)).sum() for a, c in zip(alphas, costs))


def uniform_cost(costs: list[torch.Tensor]) -> float:
    """The expected cost at uniform alphas: the normaliser that makes ``Lcq`` 1.0 at initialisation."""
    return float(expected_cost([torch.full(c.shape, 1.0 / c.numel()) for c in costs], costs))


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
