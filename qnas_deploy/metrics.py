"""PSNR and SSIM as the SR literature reports them.

Y channel of YCbCr (ITU-R BT.601, "studio" range 16-235) computed in float from 8-bit RGB,
``crop_border`` pixels shaved from each side (the scale, by convention), peak 255. SSIM is
Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, valid region.
"""
from __future__ import annotations

import numpy as np

_Y = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] from an ``HxWx3`` uint8 (or 0-255 float) RGB image."""
    if img.ndim == 2:
        return img.astype(np.float64)
    return img[..., :3].astype(np.float64) @ _Y + 16.0


def _prepare(a: np.ndarray, b: np.ndarray, crop_border: int, y_channel: bool):
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    else:
        a, b = a.astype(np.float64), b.astype(np.float64)
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """PSNR in dB between two 8-bit images (``inf`` when identical)."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def border_error(img: np.ndarray, ref: np.ndarray, width: int) -> tuple[float, int]:
    """(PSNR in dB, largest absolute error) over the ``width``-pixel strip along the edges
    that :func:`psnr` shaves, on the Y channel: where a model's border handling shows, and
    the usual metric never looks."""
    a, b = _prepare(img, ref, 0, True)
    strip = np.ones(a.shape, bool)
    strip[width:-width, width:-width] = False
    d = a[strip] - b[strip]
    mse = float(np.mean(d ** 2))
    return (float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))), int(np.ceil(np.abs(d).max()))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    g = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable 2-D correlation with the window, keeping only fully covered pixels.
    k = len(g)
    rows = sum(g[i] * x[i:x.shape[0] - k + 1 + i] for i in range(k))
    return sum(g[j] * rows[:, j:rows.shape[1] - k + 1 + j] for j in range(k))


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """Mean SSIM over the valid region (per channel, then averaged, when not on Y)."""
    a, b = _prepare(img, ref, crop_border, y_channel)
    if a.ndim == 3:
        return float(np.mean([_ssim2d(a[..., c], b[..., c]) for c in range(a.shape[2])]))
    return _ssim2d(a, b)


def _ssim2d(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    s_aa = _filter_valid(a * a, g) - mu_a**2
    s_bb = _filter_valid(b * b, g) - mu_b**2
    s_ab = _filter_valid(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
    return float(np.mean(num / den))
