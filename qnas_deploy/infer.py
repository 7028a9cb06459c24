"""Running a model on images: uint8 in, uint8 out, tiled when the image is large.

Every backend (the PyTorch model, onnxruntime, LiteRT, the numpy integer reference) is
wrapped as a *runner*: a function from one uint8 ``HxWx3`` LR image to its uint8
``sHxsWx3`` upscale. Scoring, ``upscale`` and the parity benchmark take runners only, so
they treat every backend the same way.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import BadInput
from .runtimes.opened import Runner, grey_aware


def torch_runner(model: nn.Module, device: str | torch.device = "cpu", batch_tiles: bool | None = None) -> Runner:
    """The fake-quantized model as trained, in eval mode (frozen quantizer ranges).

    Inference mode: no autograd graph, no version counters; the model's state updates (a
    quantizer's first range) are in place, so the model still trains afterwards
    (``train.validate`` relies on it). With ``batch_tiles`` the runner has a ``batch``
    attribute, ``N`` LR images of one size (``NxHxWx3``) in one forward pass, which
    :func:`tiled` uses for tiles of equal size. ``None``: on CUDA only. On CPU batches
    measured no faster at 256-pixel tiles and 0.4x at 64-pixel ones (the larger tensors
    leave the caches), so each tile runs alone there.
    """
    model = model.to(device).eval()
    if batch_tiles is None:
        batch_tiles = torch.device(device).type == "cuda"

    def run_batch(lrs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(lrs, copy=True)).permute(0, 3, 1, 2).float().div_(255.0)
        try:
            with torch.inference_mode():
                y = model(x.to(device))
                # The output quantizer puts values on k/255 already; round only removes float noise.
                y = torch.round(y.clamp_(0, 1).mul_(255.0))
        except ValueError as e:  # e.g. an image smaller than the space's minimum input
            raise BadInput(str(e)) from None
        return y.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()

    def run(lr: np.ndarray) -> np.ndarray:
        return run_batch(lr[None])[0]

    if batch_tiles:
        run.batch = run_batch
    return run


# LR pixels one batched forward pass may hold: four default tiles (256 + 2 x 16 overlap),
# a bound on the memory of one pass.
BATCH_PIXELS = 4 * 288 * 288


def tiled(run: Runner, scale: int, tile: int | None, overlap: int = 16, min_size: int = 1,
          progress: bool = False, batch_pixels: int = BATCH_PIXELS) -> Runner:
    """Run ``run`` on overlapping LR tiles of ``tile`` pixels and paste the tile centres.

    Each tile is extended by ``overlap`` LR pixels on every side where the image allows,
    and only its centre is kept, so pixels within ``overlap`` of a tile border (the
    receptive field's reach) are computed from the same neighbourhood as in one pass:
    no seams, and the result equals the untiled one when ``overlap`` covers the receptive
    field and the model has no per-image statistics (ADQ dynamic mode has).

    A runner with a ``batch`` attribute (:func:`torch_runner`) gets tiles of equal size
    together, up to ``batch_pixels`` LR pixels a pass, after the first tile alone: a model
    whose ranges are not calibrated sets them on its first input, and that input must be
    the one an unbatched run sees first. ``progress``: a bar over the tiles.
    """
    if not tile:
        return run
    run_batch = getattr(run, "batch", None)

    def wrapped(lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        if h <= tile and w <= tile:
            return run(lr)
        from ._progress import bar

        boxes = _tiles(h, w, tile, overlap, min_size)
        out = np.zeros((h * scale, w * scale) + lr.shape[2:], dtype=np.uint8)
        groups = _batches(boxes, batch_pixels) if run_batch is not None else [[b] for b in boxes]
        with bar(len(boxes), "upscale (tiles)", progress) as pbar:
            for group in groups:
                crops = [lr[ey0:ey1, ex0:ex1] for (_, _, _, _, ey0, ey1, ex0, ex1) in group]
                srs = run_batch(np.stack(crops)) if len(group) > 1 else [run(crops[0])]
                for (y0, y1, x0, x1, ey0, _, ex0, _), sr in zip(group, srs):
                    cy, cx = (y0 - ey0) * scale, (x0 - ex0) * scale
                    out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                        sr[cy:cy + (y1 - y0) * scale, cx:cx + (x1 - x0) * scale]
                pbar.update(len(group))
        return out

    return wrapped


def _tiles(h: int, w: int, tile: int, overlap: int, min_size: int) -> list[tuple[int, ...]]:
    """``(y0, y1, x0, x1, ey0, ey1, ex0, ex1)`` per tile, row by row: the tile and its extent
    with the overlap, grown where an edge tile is below the model's minimum size."""
    boxes = []
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ey0, ey1 = _grow(max(y0 - overlap, 0), min(y1 + overlap, h), h, min_size)
            ex0, ex1 = _grow(max(x0 - overlap, 0), min(x1 + overlap, w), w, min_size)
            boxes.append((y0, y1, x0, x1, ey0, ey1, ex0, ex1))
    return boxes


def _batches(boxes: list[tuple[int, ...]], batch_pixels: int) -> list[list[tuple[int, ...]]]:
    """The first tile alone, then the others grouped by extent size, at most ``batch_pixels``
    LR pixels (and at least one tile) a group."""
    groups: list[list[tuple[int, ...]]] = [boxes[:1]]
    by_size: dict[tuple[int, int], list] = {}
    for b in boxes[1:]:
        by_size.setdefault((b[5] - b[4], b[7] - b[6]), []).append(b)
    for (eh, ew), same in by_size.items():
        n = max(1, batch_pixels // (eh * ew))
        groups += [same[i:i + n] for i in range(0, len(same), n)]
    return groups


def _grow(a: int, b: int, n: int, size: int) -> tuple[int, int]:
    while b - a < min(size, n):
        if a > 0:
            a -= 1
        if b - a < min(size, n) and b < n:
            b += 1
    return a, b


def min_input_size(spec) -> int:
    from .spaces.rfdn import MIN_LR_SIZE

    if spec.space == "rfdn":
        return MIN_LR_SIZE
    return 2 if getattr(spec, "anchor", "none") == "bicubic" else 1  # the anchor mirrors 2 pixels


def upscale_file(opened, image: str, out: str, tile: int | None = 256, overlap: int = 16,
                 compare: str | None = None, allow_initialised: bool = False, progress: bool = False,
                 log: Callable[[str], None] = print) -> np.ndarray:
    """Upscale one image file to a PNG (and optionally a bicubic | model comparison PNG).

    Both outputs are checked before any work and renamed into place together, so a failure
    leaves neither. A file exported without trained weights is refused unless
    ``allow_initialised`` (:func:`runtimes.opened.check_trained`); ``log`` gets warnings
    (an alpha channel dropped).
    """
    from ._io import check_writable
    from .data import load_image
    from .imresize import imresize
    from .runtimes.opened import check_trained

    if (tile is not None and tile < 0) or overlap < 0:
        raise BadInput(f"tile {tile} and overlap {overlap}: both must be 0 or more")
    check_writable(out, compare)
    if not allow_initialised:
        check_trained(opened)
    # A grey image stays grey: the network sees it as RGB and its result is made grey again
    # (a network's three output channels differ slightly, which showed as a colour cast).
    lr = load_image(image, rgb=False, warn=log)
    if min(lr.shape[:2]) < opened.min_size:
        raise BadInput(f"{image}: {lr.shape[1]}x{lr.shape[0]} is smaller than the model's minimum "
                       f"input of {opened.min_size}x{opened.min_size}")
    sr = grey_aware(tiled(opened.run, opened.scale, tile, overlap, opened.min_size, progress=progress))(lr)
    images = [(sr, out)]
    if compare:
        images.append((np.concatenate([imresize(lr, float(opened.scale)), sr], axis=1), compare))
    _save_pngs(images)
    return sr


def _save_pngs(images: list[tuple[np.ndarray, str]]) -> None:
    """Every PNG to a temporary name first, then all renamed: none is left if one fails."""
    import contextlib

    from PIL import Image

    from ._io import atomic_path

    with contextlib.ExitStack() as stack:
        for img, path in images:
            Image.fromarray(img).save(stack.enter_context(atomic_path(path)), format="PNG")
