"""Bicubic resize that matches MATLAB's ``imresize`` (the LR images of every SR benchmark).

MATLAB's bicubic uses Keys' cubic with a = -0.5, widens (antialiases) the kernel by
``1/scale`` when shrinking, mirrors the image at its borders, resizes one dimension at a
time, and for uint8 input rounds half away from zero and saturates. Implemented in numpy
as per-dimension weight matrices (``contributions``) applied with ``tensordot``.
"""
from __future__ import annotations

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def contributions(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """Dense ``[out_len, in_len]`` matrix of MATLAB's bicubic weights for one dimension."""
    width = 4.0
    if scale < 1 and antialias:
        kernel = lambda t: scale * cubic(scale * t)  # noqa: E731
        width /= scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)          # output pixel centres in input coordinates
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    w = kernel(u[:, None] - idx)
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx0 = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    m = np.zeros((out_len, in_len))
    np.add.at(m, (np.repeat(np.arange(out_len), taps), idx0.ravel()), w.ravel())
    return m


def imresize(img: np.ndarray, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> np.ndarray:
    """Resize ``HxW`` or ``HxWxC`` like MATLAB's ``imresize(img, scale, 'bicubic')``.

    ``uint8`` input gives ``uint8`` output (rounded half away from zero, saturated); float
    input gives float64 output. Give either ``scale`` or the output ``size=(H, W)``.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    h, w = img.shape[:2]
    if size is None:
        size = (int(np.ceil(h * scale)), int(np.ceil(w * scale)))
        scales = (scale, scale)
    else:
        scales = (size[0] / h, size[1] / w)
    out = img.astype(np.float64)
    # MATLAB resizes the dimension with the smaller scale first (rows first on ties).
    for dim in sorted((0, 1), key=lambda d: scales[d]):
        m = contributions(out.shape[dim], size[dim], scales[dim], antialias)
        out = np.moveaxis(np.tensordot(m, np.moveaxis(out, dim, 0), axes=(1, 0)), 0, dim)
    if img.dtype == np.uint8:
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
    return out
