"""Scoring super-resolution results on benchmark sets (PSNR/SSIM, Y channel, shaved borders)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .data import benchmark_pairs, resolve_dataset
from .imresize import imresize
from .metrics import border_error, psnr, ssim


def bicubic_upscaler(scale: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda lr: imresize(lr, float(scale))


def evaluate_sets(upscale: Callable[[np.ndarray], np.ndarray], sets: list[str], scale: int,
                  datasets_root: str | None = None) -> dict:
    """Per-image and mean ``psnr_db``/``ssim`` (Y, ``scale`` pixels shaved, as papers report)
    of ``upscale`` on each set, and ``border_psnr_db``/``border_max_error`` on the strip
    the shave leaves out (the set's worst ``border_max_error`` is its mean entry)."""
    result = {"scale": scale, "sets": {}}
    for name in sets:
        folder = resolve_dataset(name, datasets_root)
        images = {}
        for pair in benchmark_pairs(folder, scale):
            sr = upscale(pair.lr)
            b_psnr, b_max = border_error(sr, pair.hr, scale)
            images[pair.name] = {"psnr_db": psnr(sr, pair.hr, scale), "ssim": ssim(sr, pair.hr, scale),
                                 "border_psnr_db": b_psnr, "border_max_error": b_max}
        mean = {k: float(np.mean([v[k] for v in images.values()])) for k in ("psnr_db", "ssim", "border_psnr_db")}
        mean["border_max_error"] = max(v["border_max_error"] for v in images.values())
        result["sets"][name] = {"path": str(folder), "images": images, "mean": mean}
    return result


def results_table(result: dict, method: str) -> str:
    lines = [f"{method}, x{result['scale']}:",
             f"{'set':10s} {'images':>6s} {'PSNR (dB)':>10s} {'SSIM':>7s} {'border PSNR':>12s} {'border max err':>15s}"]
    for name, s in result["sets"].items():
        m = s["mean"]
        lines.append(f"{name:10s} {len(s['images']):6d} {m['psnr_db']:10.2f} {m['ssim']:7.4f} "
                     f"{m['border_psnr_db']:12.2f} {m['border_max_error']:15d}")
    return "\n".join(lines)


def delta_psnr_db(scores: dict, base: dict) -> list[float]:
    """Per-image PSNR of ``scores`` minus ``base`` (two :func:`evaluate_sets` results)."""
    return [scores["sets"][s]["images"][i]["psnr_db"] - base["sets"][s]["images"][i]["psnr_db"]
            for s in base["sets"] for i in base["sets"][s]["images"]]
