"""Running a model on images: uint8 in, uint8 out, tiled when the image is large.

Every backend (the PyTorch model, onnxruntime, LiteRT, the numpy integer reference) is
wrapped as a *runner*: a function from one uint8 ``HxWx3`` LR image to its uint8
``sHxsWx3`` upscale. Scoring, ``upscale`` and the parity benchmark take runners only, so
they treat every backend the same way.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import BadInput
from .runtimes.opened import Runner


def torch_runner(model: nn.Module, device: str | torch.device = "cpu") -> Runner:
    """The fake-quantized model as trained, in eval mode (frozen quantizer ranges)."""
    model = model.to(device).eval()

    def run(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(lr, copy=True)).permute(2, 0, 1)[None].float().div(255.0)
        try:
            with torch.no_grad():
                y = model(x.to(device))
        except ValueError as e:  # e.g. an image smaller than the space's minimum input
            raise BadInput(str(e)) from None
        # The output quantizer puts values on k/255 already; round only removes float noise.
        y = torch.round(y.clamp(0, 1) * 255.0)
        return y[0].permute(1, 2, 0).to(torch.uint8).cpu().numpy()

    return run


def grey_aware(run: Runner) -> Runner:
    """Accept ``HxW`` grey images too: the network sees them as RGB, the result is grey again."""
    def wrapped(lr: np.ndarray) -> np.ndarray:
        if lr.ndim == 2:
            out = run(np.repeat(lr[..., None], 3, axis=2)).astype(np.float64).mean(axis=2)
            return np.clip(np.round(out), 0, 255).astype(np.uint8)
        return run(lr)
    return wrapped


def tiled(run: Runner, scale: int, tile: int | None, overlap: int = 16, min_size: int = 1) -> Runner:
    """Run ``run`` on overlapping LR tiles of ``tile`` pixels and paste the tile centres.

    Each tile is extended by ``overlap`` LR pixels on every side where the image allows,
    and only its centre is kept, so pixels within ``overlap`` of a tile border (the
    receptive field's reach) are computed from the same neighbourhood as in one pass:
    no seams, and the result equals the untiled one when ``overlap`` covers the receptive
    field and the model has no per-image statistics (ADQ dynamic mode has).
    """
    if not tile:
        return run

    def wrapped(lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        if h <= tile and w <= tile:
            return run(lr)
        out = np.zeros((h * scale, w * scale) + lr.shape[2:], dtype=np.uint8)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                ey0, ex0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
                ey1, ex1 = min(y1 + overlap, h), min(x1 + overlap, w)
                # Grow small edge tiles so that they still meet the model's minimum size.
                ey0, ey1 = _grow(ey0, ey1, h, min_size)
                ex0, ex1 = _grow(ex0, ex1, w, min_size)
                sr = run(lr[ey0:ey1, ex0:ex1])
                cy, cx = (y0 - ey0) * scale, (x0 - ex0) * scale
                out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                    sr[cy:cy + (y1 - y0) * scale, cx:cx + (x1 - x0) * scale]
        return out

    return wrapped


def _grow(a: int, b: int, n: int, size: int) -> tuple[int, int]:
    while b - a < min(size, n):
        if a > 0:
            a -= 1
        if b - a < min(size, n) and b < n:
            b += 1
    return a, b


def min_input_size(spec) -> int:
    from .spaces.rfdn import MIN_LR_SIZE

    return MIN_LR_SIZE if spec.space == "rfdn" else 1


def upscale_file(opened, image: str, out: str, tile: int | None = 256, overlap: int = 16,
                 compare: str | None = None) -> np.ndarray:
    """Upscale one image file to a PNG (and optionally a bicubic | model comparison PNG)."""
    from .data import load_image
    from .imresize import imresize

    lr = load_image(image, rgb=True)
    if min(lr.shape[:2]) < opened.min_size:
        raise BadInput(f"{image}: {lr.shape[1]}x{lr.shape[0]} is smaller than the model's minimum "
                       f"input of {opened.min_size}x{opened.min_size}")
    sr = tiled(opened.run, opened.scale, tile, overlap, opened.min_size)(lr)
    _save_png(sr, out)
    if compare:
        side = np.concatenate([imresize(lr, float(opened.scale)), sr], axis=1)
        _save_png(side, compare)
    return sr


def _save_png(img: np.ndarray, path: str) -> None:
    from PIL import Image

    from ._io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(img).save(tmp, format="PNG")
