"""Image folders and benchmark sets.

Images load as 8-bit arrays: RGB ``HxWx3``, or ``HxW`` for single-channel files, which the
SR benchmarks score on their grey values (MATLAB's ``size(im, 3) == 1`` branch). RGBA
drops alpha, palette and 16-bit images convert to 8 bits. A benchmark set is a folder with
``HR/`` and ``LR_bicubic/X{scale}/`` (the layout of ``../shared/datasets``); a name such as
``Set5`` resolves under ``--datasets-root``, then ``$QNAS_DATASETS``, then
``../shared/datasets`` when present.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DATASETS_ENV = "QNAS_DATASETS"


def load_image(path: str | Path, rgb: bool = False, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """8-bit image as ``HxWx3`` (``HxW`` for single-channel files unless ``rgb``).

    ``warn`` is told when transparency is dropped, where the caller writes an image the
    user will look at (``upscale``); scoring sets skip it."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such image")
    try:
        with Image.open(p) as im:
            im.load()
            if warn and (im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info):
                warn(f"warning: {p}: alpha channel dropped (the model upscales RGB; the output has no transparency)")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32)
                gray = (arr >> 8).astype(np.uint8) if arr.max() > 255 else arr.astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2) if rgb else gray
            if im.mode in ("L", "1") and not rgb:
                return np.asarray(im.convert("L"), dtype=np.uint8)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{p}: not a readable image ({e})") from None


def list_images(folder: str | Path) -> list[Path]:
    f = Path(folder)
    if not f.is_dir():
        raise BadInput(f"{f}: no such folder")
    files = sorted(p for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BadInput(f"{f}: no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def default_datasets_root() -> Path | None:
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base.parent / "shared" / "datasets"
        if candidate.is_dir():
            return candidate
    return None


def resolve_dataset(name_or_path: str, root: str | Path | None = None) -> Path:
    """A dataset folder from a path or a name under the datasets root."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    base = Path(root) if root else default_datasets_root()
    if base is not None and (base / name_or_path).is_dir():
        return base / name_or_path
    where = f" under {base}" if base is not None else f" (no datasets root: set --datasets-root or ${DATASETS_ENV})"
    raise BadInput(f"{name_or_path}: no such folder, and no dataset of that name{where}")


@dataclass(frozen=True)
class Pair:
    name: str
    hr: np.ndarray
    lr: np.ndarray


def benchmark_pairs(folder: str | Path, scale: int) -> list[Pair]:
    """HR/LR pairs of a benchmark folder; HR is cropped to ``scale`` times its LR."""
    folder = Path(folder)
    hr_dir, lr_dir = folder / "HR", folder / "LR_bicubic" / f"X{scale}"
    if not hr_dir.is_dir():
        raise BadInput(f"{folder}: expected an HR/ folder (and LR_bicubic/X{scale}/) inside")
    pairs = []
    for hr_path in list_images(hr_dir):
        hr = load_image(hr_path)
        lr_path = lr_dir / hr_path.name
        if lr_path.is_file():
            lr = load_image(lr_path)
        else:
            from .imresize import imresize
            hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
            lr = imresize(hr, 1 / scale)
        h, w = lr.shape[0] * scale, lr.shape[1] * scale
        if hr.shape[0] < h or hr.shape[1] < w:
            raise BadInput(f"{lr_path}: LR image {lr.shape[1]}x{lr.shape[0]} is larger than its HR / {scale}")
        pairs.append(Pair(hr_path.stem, hr[:h, :w], lr))
    return pairs


def training_pairs(folder: str | Path, scale: int) -> list[Pair]:
    """HR/LR pairs for training: a benchmark-layout folder (``HR/``, ``LR_bicubic/X{s}/``)
    or a plain folder of HR images, whose LR images are made with MATLAB-style bicubic."""
    return list(_iter_training_pairs(Path(folder), scale))


def load_pairs(data: str, scale: int, root: str | None, training: bool) -> list[Pair]:
    """Pairs from comma-separated folders or dataset names."""
    pairs: list[Pair] = []
    for item in (s for s in data.split(",") if s):
        folder = resolve_dataset(item, root)
        pairs += training_pairs(folder, scale) if training else benchmark_pairs(folder, scale)
    if not pairs:
        raise BadInput(f"{data}: no images")
    return pairs


class PatchSampler:
    """Random aligned LR/HR patches with flips and 90-degree rotations.

    Every random choice comes from one ``torch.Generator`` whose state is saved in the
    checkpoint, so a resumed run draws the same patches as an uninterrupted one.
    Returns float tensors in [0, 1]: LR ``[N, 3, p, p]`` and HR ``[N, 3, s*p, s*p]``.
    """

    def __init__(self, pairs: list[Pair], scale: int, patch: int, seed: int = 0):
        self.scale, self.patch = scale, patch
        self.lr = [_as_rgb(p.lr) for p in pairs]
        self.hr = [_as_rgb(p.hr) for p in pairs]
        small = [p.name for p, lr in zip(pairs, self.lr) if min(lr.shape[:2]) < patch]
        if small:
            raise BadInput(f"{small[0]}: LR image smaller than the {patch}x{patch} training patch "
                           f"({len(small)} such images); lower --patch")
        self.generator = torch.Generator().manual_seed(seed)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, p = self.scale, self.patch
        lrs, hrs = [], []
        for _ in range(n):
            i = self._randint(len(self.lr))
            lr, hr = self.lr[i], self.hr[i]
            y, x = self._randint(lr.shape[0] - p + 1), self._randint(lr.shape[1] - p + 1)
            a, b = _cut(lr, hr, s, p, y, x, self._randint(4), self._randint(2))
            lrs.append(a)
            hrs.append(b)
        return _to_tensor(np.stack(lrs)), _to_tensor(np.stack(hrs))

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def _cut(lr: np.ndarray, hr: np.ndarray, s: int, p: int, y: int, x: int, k: int, flip: int):
    """The aligned LR patch at ``(y, x)`` and its HR patch, rotated ``k`` quarter turns and
    mirrored if ``flip``, as contiguous arrays."""
    a, b = np.rot90(lr[y:y + p, x:x + p], k), np.rot90(hr[s * y:s * (y + p), s * x:s * (x + p)], k)
    if flip:
        a, b = a[:, ::-1], b[:, ::-1]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _as_rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def _to_tensor(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)


class PairStore:
    """Training pairs read one at a time: in memory (a list of :class:`Pair`) or from a
    decoded cache of ``.npy`` files (:func:`cached_training_store`), memory-mapped so that
    a set the size of DIV2K is never decoded into Python lists at once, and worker
    processes share the operating system's page cache instead of copies."""

    def __init__(self, pairs: list[Pair] | None = None, files: list[tuple[str, Path, Path]] | None = None):
        if (pairs is None) == (files is None):
            raise ValueError("give pairs or files")
        self._pairs, self._files = pairs, files
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._pairs if self._pairs is not None else self._files)

    def name(self, i: int) -> str:
        return self._pairs[i].name if self._pairs is not None else self._files[i][0]

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(lr, hr)`` of pair ``i``, RGB ``HxWx3`` uint8."""
        if self._pairs is not None:
            p = self._pairs[i]
            return _as_rgb(p.lr), _as_rgb(p.hr)
        if i not in self._open:
            _, lr, hr = self._files[i]
            self._open[i] = (np.load(lr, mmap_mode="r"), np.load(hr, mmap_mode="r"))
        return self._open[i]

    def __getstate__(self):
        # Worker processes open their own maps.
        return {**self.__dict__, "_open": {}}


def _cache_root() -> Path:
    return Path(os.environ.get("QNAS_CACHE", Path.home() / ".cache" / "qnas-deploy")) / "decoded"


def cached_training_store(data: str, scale: int, root: str | None, progress: bool = False) -> PairStore:
    """The training pairs of ``data`` (as :func:`load_pairs`) decoded once into a cache of
    ``.npy`` files keyed by the images' paths, sizes and times, then memory-mapped."""
    import hashlib

    from ._io import atomic_path

    files: list[tuple[str, Path, Path]] = []
    for item in (s for s in data.split(",") if s):
        folder = resolve_dataset(item, root)
        hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
        images = list_images(hr_dir)
        lr_dir = folder / "LR_bicubic" / f"X{scale}"
        stamped = images + (list_images(lr_dir) if lr_dir.is_dir() else [])
        stamp = "".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in stamped)
        key = hashlib.sha256(f"{folder.resolve()}|x{scale}|{stamp}".encode()).hexdigest()[:16]
        cache = _cache_root() / f"{folder.name}_x{scale}_{key}"
        done = cache / "complete"
        names = [p.stem for p in images]
        if not done.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            from ._progress import bar

            b = bar(len(images), f"decoding {folder.name}", progress)
            for pair in _iter_training_pairs(folder, scale):
                for kind, arr in (("lr", pair.lr), ("hr", pair.hr)):
                    with atomic_path(cache / f"{pair.name}.{kind}.npy") as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, _as_rgb(arr))
                b.update(1)
            b.close()
            done.write_text("\n".join(names))
        files += [(n, cache / f"{n}.lr.npy", cache / f"{n}.hr.npy") for n in names]
    if not files:
        raise BadInput(f"{data}: no images")
    return PairStore(files=files)


def _iter_training_pairs(folder: Path, scale: int):
    """:func:`training_pairs` one pair at a time (the decoded cache holds one at once)."""
    if (folder / "HR").is_dir():
        yield from benchmark_pairs(folder, scale)
        return
    from .imresize import imresize

    for p in list_images(folder):
        hr = load_image(p, rgb=True)
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        yield Pair(p.stem, hr, imresize(hr, 1 / scale))


class PatchDataset(torch.utils.data.Dataset):
    """Sample ``i`` of a training run: a random aligned LR/HR patch with flips and
    90-degree rotations, drawn from a generator seeded with ``(seed, i)``.

    A patch depends on its index alone, so the stream is the same with any number of
    loader workers, and a run resumed at sample ``i`` draws what an uninterrupted one
    would. Returns float tensors in [0, 1]: LR ``[3, p, p]`` and HR ``[3, s*p, s*p]``.
    """

    def __init__(self, store: PairStore, scale: int, patch: int, seed: int, length: int):
        self.store, self.scale, self.patch, self.seed, self.length = store, scale, patch, seed, length
        small = [store.name(i) for i in range(len(store)) if min(store.get(i)[0].shape[:2]) < patch]
        if small:
            raise BadInput(f"{small[0]}: LR image smaller than the {patch}x{patch} training patch "
                           f"({len(small)} such images); lower --patch")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(i)])
        s, p = self.scale, self.patch
        lr, hr = self.store.get(int(rng.integers(len(self.store))))
        y, x = int(rng.integers(lr.shape[0] - p + 1)), int(rng.integers(lr.shape[1] - p + 1))
        a, b = _cut(lr, hr, s, p, y, x, int(rng.integers(4)), int(rng.integers(2)))
        return _to_tensor(a[None])[0], _to_tensor(b[None])[0]


class _Shard(torch.utils.data.Sampler):
    """Rank ``rank``'s contiguous share of every global batch of ``batch`` samples from ``start``."""

    def __init__(self, start: int, end: int, batch: int, rank: int, world: int):
        self.start, self.end, self.batch, self.rank, self.world = start, end, batch, rank, world

    def __iter__(self):
        share = self.batch // self.world
        for b in range(self.start, self.end, self.batch):
            first = b + self.rank * share
            yield from range(first, min(first + share, self.end))

    def __len__(self) -> int:
        return max(0, (self.end - self.start) // self.world)


def patch_loader(ds: PatchDataset, batch: int, start: int = 0, workers: int = 0, pin_memory: bool = False,
                 rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    """Batches of ``ds`` from sample ``start`` on, in order (the order is the run). With
    ``world`` processes, each loads its ``batch / world`` share of every global batch."""
    sampler = range(start, len(ds)) if world == 1 else _Shard(start, len(ds), batch, rank, world)
    return torch.utils.data.DataLoader(ds, batch_size=batch // world, sampler=sampler, num_workers=workers,
                                       pin_memory=pin_memory, drop_last=False,
                                       persistent_workers=False, prefetch_factor=4 if workers else None)
