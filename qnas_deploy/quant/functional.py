"""Pure quantization math shared by training, search and the integer exporters.

Every function here is a plain function of tensors (no state), so each one has a numpy
reference test (``tests/test_quant_functional.py``). The conventions are the ones of
DESIGN.md section 4:

* rounding is half to even (``torch.round``, ONNX ``QuantizeLinear``);
* a value is divided by its scale (as ONNX does), never multiplied by a reciprocal;
* integer ranges come from :func:`int_range` only.
"""
from __future__ import annotations

import functools
import math

import torch

__all__ = [
    "int_range",
    "round_ste",
    "fake_quant",
    "fake_quant_lsq",
    "lsq_init_step",
    "lsq_grad_scale",
    "hwgq_step",
    "hwgq",
    "quant_noise",
    "requantize",
    "scale_accumulator",
]


def int_range(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-wide grid.

    Args:
        bits: bit width, 1..16.
        signed: two's complement range ``[-2^(b-1), 2^(b-1)-1]`` if true, else ``[0, 2^b-1]``.
        narrow: drop the most negative signed value (``[-2^(b-1)+1, 2^(b-1)-1]``).
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bit width must be in 1..16, got {bits}")
    if signed:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return (lo + 1 if narrow else lo), hi
    return 0, 2**bits - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient (straight-through)."""
    return x + (torch.round(x) - x).detach()


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    # Forward value x, gradient multiplied by `scale` (LSQ, Esser et al. 2020, sec. 2.2).
    return (x - x * scale).detach() + x * scale


def fake_quant(x: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | float,
               qmin: int, qmax: int) -> torch.Tensor:
    """Affine fake quantization ``(clamp(round(x/scale)+zp, qmin, qmax) - zp) * scale``.

    The gradient passes straight through inside the range and is zero where the value
    is clipped (the usual STE with clipping). ``scale`` and ``zero_point`` broadcast
    against ``x``; the gradient does not flow into them (see :func:`fake_quant_lsq`).
    """
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device).detach()
    zero_point = torch.as_tensor(zero_point, dtype=x.dtype, device=x.device).detach()
    q = round_ste(x / scale) + zero_point
    q = torch.clamp(q, qmin, qmax)
    return (q - zero_point) * scale


def requantize(acc: torch.Tensor, s_in: torch.Tensor | float, s_w: torch.Tensor, s_out: torch.Tensor | float,
               zero_point: int, qmin: int, qmax: int, mult: torch.Tensor | float | None = None) -> torch.Tensor:
    """The integer runtime's requantisation of a conv accumulator onto an output grid.

    ``q = clamp(round(float32(acc) * M) + zp, qmin, qmax)`` with the per-channel float32
    multiplier ``M = float32(s_in * float32(s_w * mult)) / s_out``, rounded once, as
    onnxruntime's QLinearConv computes it (FACTS.md section 5). Dequantizing ``acc`` first
    and quantizing the result rounds twice, which differs where a value lies within float
    rounding of a tie; RFDN's attention mask turns such one-step differences into visibly
    different pixels, so inference must round exactly where the runtime does.

    ``acc``: ``[N, C, H, W]`` integer values (any float dtype); ``s_w``: ``[C]``; ``mult``:
    a scalar folded into the weight scales (ADQ's static scale). Returns the integers ``q``
    as float32.
    """
    f32 = torch.float32
    s_w = torch.as_tensor(s_w, dtype=f32).detach().reshape(-1)
    if mult is not None:
        s_w = s_w * torch.as_tensor(mult, dtype=f32).detach().reshape(())
    m = (torch.as_tensor(s_in, dtype=f32).detach() * s_w) / torch.as_tensor(s_out, dtype=f32).detach()
    q = torch.round(acc.to(f32) * m.to(acc.device).reshape(1, -1, 1, 1)) + zero_point
    return torch.clamp(q, qmin, qmax)


def scale_accumulator(acc: torch.Tensor, s_in: torch.Tensor | float, s_w: torch.Tensor,
                      mult: torch.Tensor | float | None = None) -> torch.Tensor:
    """A conv accumulator as real values, ``float32(acc) * float32(s_in * s_w)`` (times
    ``mult``), for a consumer without a frozen grid: a float layer, or a quantizer that is
    still measuring its range."""
    f32 = torch.float32
    step = (torch.as_tensor(s_in, dtype=f32).detach() * torch.as_tensor(s_w, dtype=f32).detach().reshape(-1))
    y = acc.to(f32) * step.to(acc.device).reshape(1, -1, 1, 1)
    return y if mult is None else y * mult


def lsq_grad_scale(numel_per_step: int, qmax: int) -> float:
    """LSQ's step-size gradient scale ``1/sqrt(N * Q_P)`` (Esser et al. 2020, eq. 4)."""
    return 1.0 / math.sqrt(max(numel_per_step, 1) * max(qmax, 1))


def fake_quant_lsq(x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int,
                   grad_scale: float) -> torch.Tensor:
    """LSQ fake quantization with a learned step.

    ``step`` broadcasts against ``x`` (per output channel for weights: shape ``[C,1,1,1]``).
    Forward: ``clamp(round(x/step), qmin, qmax) * step``. Backward: the LSQ gradients,
    i.e. the STE for ``x`` inside the range, and for ``step`` the LSQ derivative
    ``round(v) - v`` inside the range and ``qmin``/``qmax`` outside, times ``grad_scale``.
    Written with autograd primitives so that those gradients fall out of the chain rule.
    """
    s = _grad_scale(step, grad_scale)
    v = torch.clamp(x / s, qmin, qmax)
    return round_ste(v) * s


def lsq_init_step(w: torch.Tensor, qmax: int, per_channel: bool = True) -> torch.Tensor:
    """LSQ's step initialisation ``2 * mean(|w|) / sqrt(Q_P)``, per output channel."""
    if per_channel:
        m = w.detach().abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)
    else:
        m = w.detach().abs().mean()
    return (2.0 * m / math.sqrt(qmax)).clamp_min(1e-8)


def _half_gaussian_mse(step: float, levels: int) -> float:
    """Mean squared error of the uniform grid ``{0, step, ..., levels*step}`` on ReLU(N(0,1)).

    Negative inputs map to 0 exactly, so only x > 0 contributes. Closed form per cell with
    the Gaussian moments over [a, b]: M0 = Phi(b)-Phi(a), M1 = phi(a)-phi(b),
    M2 = M0 + a phi(a) - b phi(b); the error of a cell centred at c is M2 - 2c M1 + c^2 M0.
    """
    def phi(t: float) -> float:
        return 0.0 if math.isinf(t) else math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)

    def cdf(t: float) -> float:
        return 1.0 if math.isinf(t) else 0.5 * (1 + math.erf(t / math.sqrt(2)))

    def tphi(t: float) -> float:
        return 0.0 if math.isinf(t) else t * phi(t)

    err = 0.0
    for k in range(levels + 1):
        a = max(0.0, (k - 0.5) * step)
        b = math.inf if k == levels else (k + 0.5) * step
        m0 = cdf(b) - cdf(a)
        m1 = phi(a) - phi(b)
        m2 = m0 + tphi(a) - tphi(b)
        c = k * step
        err += m2 - 2 * c * m1 + c * c * m0
    return err


@functools.lru_cache(maxsize=None)
def hwgq_step(bits: int) -> float:
    """Optimal uniform step of a ``bits``-bit quantizer for a half-wave Gaussian N(0,1).

    This is HWGQ's uniform variant (Cai et al. 2017): ``2^b`` levels ``{0, ..., (2^b-1)Δ}``
    with Δ minimising the mean squared error of ReLU(x), x ~ N(0, 1) (the Lloyd-Max
    optimum restricted to uniform grids). Found by golden-section search on log Δ.
    Published values: 2 bits 0.6356, 4 bits 0.2131, 8 bits 0.0203.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"HWGQ bit width must be in 1..16, got {bits}")
    levels = 2**bits - 1
    lo, hi = math.log(1e-6), math.log(4.0)
    g = (math.sqrt(5) - 1) / 2
    f = lambda t: _half_gaussian_mse(math.exp(t), levels)  # noqa: E731
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(200):
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - g * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + g * (hi - lo)
            fd = f(d)
        if hi - lo < 1e-12:
            break
    return math.exp(0.5 * (lo + hi))


def hwgq(x: torch.Tensor, step: torch.Tensor | float, bits: int) -> torch.Tensor:
    """ReLU followed by unsigned uniform quantization on ``2^bits`` levels of ``step``.

    Zero point 0, so the grid is exactly what a uint8 tensor with ``scale=step`` holds
    (clamped to ``[0, 2^b-1]`` for sub-8-bit widths). STE with clipping.
    """
    qmin, qmax = int_range(bits, signed=False)
    return fake_quant(torch.relu(x), step, 0.0, qmin, qmax)


def quant_noise(x: torch.Tensor, bits: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantization noise of SAN (QuantNAS eq. 6): ``Δ/2 · z``, ``z ~ N(0, 1)``.

    ``Δ = (max(x) - min(x)) / (2^b - 1)`` is the step a ``bits``-bit grid spanning the
    tensor's range would have. The noise is detached: it carries no gradient, so
    ``x + quant_noise(x, b)`` passes gradients to ``x`` unchanged (the reparametrisation
    that makes SAN differentiable).
    """
    xd = x.detach()
    delta = (xd.max() - xd.min()) / (2**bits - 1)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (delta / 2) * z
