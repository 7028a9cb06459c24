"""ADQ's BatchNorms moved by a few parts per million so that every LiteRT kernel computes
them exactly.

At inference ADQ's BatchNorm is a per-channel map of the input's 256 levels, held as a
depthwise 1x1 integer conv: weight ``+-127`` at scale ``|alpha| / 127``, an int32 bias
(``ADQ.normalize``). LiteRT's builtin DEPTHWISE_CONV_2D requantises it in two roundings, on
x86 and aarch64 alike, so an input level whose exact result lies just below a rounding
boundary comes out one step off (1-2% of the levels of a trained channel). Unlike an
identity requantisation (``passes/pointwise_exact.py``) its representation is not free: the
bias pins the weight, and only float32 ulps of the scale remain, too few to reach past the
boundary (the mismatching levels sit about 3e-5 of the value, 500 ulps, away).

So the model moves instead, as ``add_scales`` moves add scales: after calibration each
channel some LiteRT arithmetic computes otherwise gets the nearest BatchNorm weight and bias
(the weight in relative steps of :data:`STEP`, the bias in units of the int32 bias, a 127th
of an input step) at which its whole table is exact in every arithmetic of
``pointwise_exact.ARITHMETICS``, in the kernels' SIMD path and their scalar one. The model
holds the moved weight, so PyTorch, the reference and every runtime compute the same map;
the cost is nil (``alpha`` by at most 0.05%, ``beta`` by at most 4/127 of an input step).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from . import ir
from .ir import Graph, Tensor
from .passes.pointwise_exact import SIMD, exact_channels

STEP, MAX_STEPS = 2.0 ** -21, 1024   # relative step of the weight, and how far (0.05%)
BIAS = 4                             # integer bias units the bias may move, each way
BLOCK, CHUNK = 2048, 64              # candidates screened, and verified, at a time


@dataclass
class SnappedChannel:
    batchnorm: str                 # the BN's output tensor in the canonical graph
    channel: int
    old: tuple[float, float]       # BN (weight, bias)
    new: tuple[float, float]


def _maps(adq, weights: torch.Tensor, biases: torch.Tensor, c: int, x_scale: float):
    """Channel ``c``'s integer map for candidate BN ``weights`` and ``biases`` (float32),
    computed as ``ADQ.folded`` and ``GraphBuilder.batchnorm`` compute it: (sign, w_scale, bias)."""
    bn = adq.bn
    alpha = weights / torch.sqrt(bn.running_var[c] + bn.eps)
    beta = biases - bn.running_mean[c] * alpha
    ws = alpha.abs().clamp_min(1e-12) / 127
    step = torch.as_tensor(x_scale, dtype=torch.float32) * ws
    return torch.where(alpha < 0, -1, 1).numpy(), ws.numpy().astype(np.float32), \
        torch.round(beta / step).numpy().astype(np.int64)


def _exact(xt: Tensor, yt: Tensor, like: ir.Conv, sign, ws, bias) -> np.ndarray:
    k = len(ws)
    return exact_channels(xt, yt, like.replace(weight=(127 * sign).astype(np.int8).reshape(k, 1, 1, 1),
                                               w_scale=ws.astype(np.float32), bias=bias.astype(np.int32), groups=k))


def _both_paths(xt, yt, like, sign, ws, bias) -> np.ndarray:
    """Per candidate: exact in the SIMD channel blocks and in the scalar tail (two channels
    of one: a single-channel conv is not depthwise and runs in ruy)."""
    pad = -len(ws) % SIMD
    cat = lambda v: np.concatenate([v, v[:pad]])  # noqa: E731
    ok = _exact(xt, yt, like, cat(sign), cat(ws), cat(bias))[:len(ws)]
    for i in np.flatnonzero(ok):  # survivors, one at a time, as tail channels
        two = lambda v: np.repeat(v[i:i + 1], 2)  # noqa: E731
        ok[i] = _exact(xt, yt, like, two(sign), two(ws), two(bias))[0]
        if ok[i]:
            break
    return ok


@functools.lru_cache(maxsize=1)
def _candidates():
    """(relative weight move in steps, bias move in integer bias units), smallest first."""
    moves = [(0, d) for d in range(1, BIAS + 1)]
    for k in range(1, MAX_STEPS + 1):
        moves += [(k, 0), (-k, 0)] + [(s * k, d) for s in (1, -1) for d in range(1, BIAS + 1)]
    out = []
    for k, d in moves:
        out += [(k, d), (k, -d)] if d else [(k, 0)]
    return np.array(out, np.float64)


def _margins(xt: Tensor, yt: Tensor, sign, ws, bias) -> np.ndarray:
    """Per candidate, how far (in output steps) its exact results keep from a rounding tie
    over the input levels that do not clip: the two roundings of the builtin kernels can
    only differ from one near a tie, so the widest margin is tried first."""
    k = np.arange(xt.qmin, xt.qmax + 1, dtype=np.float64) - xt.zero_point
    m = np.float64(np.float32(xt.scale)) * ws.astype(np.float64) / np.float64(np.float32(yt.scale))
    r = (k[None, :] * (127.0 * sign)[:, None] + bias[:, None]) * m[:, None]
    inside = (r + yt.zero_point > yt.qmin - 1) & (r + yt.zero_point < yt.qmax + 1)
    d = np.abs(r - np.floor(r) - 0.5)
    return np.where(inside, d, np.inf).min(axis=1)


def _fix(adq, xt: Tensor, yt: Tensor, like: ir.Conv, c: int) -> tuple[float, float] | None:
    w0, b0 = adq.bn.weight.detach()[c].double(), adq.bn.bias.detach()[c].double()
    bias_unit = float(xt.scale) * float(like.w_scale[c])  # one unit of the int32 bias, in BN units
    cands = torch.from_numpy(_candidates())
    # blocks of the smallest moves first; in each, the widest margins verified
    for start in range(0, len(cands), BLOCK):
        part = cands[start:start + BLOCK]
        w = (w0 * (1 + part[:, 0] * STEP)).float()
        b = (b0 + part[:, 1] * bias_unit).float()
        with torch.no_grad():
            sign, ws, bias = _maps(adq, w, b, c, xt.scale)
        top = np.argsort(-_margins(xt, yt, sign, ws, bias), kind="stable")[:CHUNK]
        ok = _both_paths(xt, yt, like, sign[top], ws[top], bias[top])
        if ok.any():
            i = int(top[int(np.argmax(ok))])
            return float(w[i]), float(b[i])
    return None


def bad_channels(graph: Graph, node) -> np.ndarray:
    return np.flatnonzero(~exact_channels(graph.tensor(node.inputs[0]), graph.tensor(node.output), node.attrs))


def snap(model) -> list[SnappedChannel]:
    """Move the BatchNorm weights of ``model``'s ADQ blocks (calibrated, lowerable, add
    scales snapped: the BN's input grid is final) until every LiteRT arithmetic computes each
    BN exactly; returns what moved. A channel no weight within :data:`MAX_STEPS` fixes is
    left as it is."""
    from ..adq import ADQ
    from .builder import lower_model

    adqs = [m for m in model.modules() if isinstance(m, ADQ) and m.bn_quant.enabled]
    if not adqs:
        return []
    holders: dict = {}
    graph = lower_model(model, holders=holders)
    moved = []
    for adq in adqs:
        name = next((t for t, q in holders.items() if q is adq.bn_quant), None)
        node = graph.producer(name) if name else None
        if node is None or node.op != "conv":
            continue
        xt, yt = graph.tensor(node.inputs[0]), graph.tensor(name)
        for c in bad_channels(graph, node):
            new = _fix(adq, xt, yt, node.attrs, int(c))
            if new is not None:
                old = (float(adq.bn.weight[c].detach()), float(adq.bn.bias[c].detach()))
                with torch.no_grad():
                    adq.bn.weight[c], adq.bn.bias[c] = new
                moved.append(SnappedChannel(name, int(c), old, new))
    return moved
