"""The training data path: the decoded cache, index-seeded patches, loader workers."""
import numpy as np
import torch

from qnas_deploy.data import PairStore, PatchDataset, cached_training_store, patch_loader, training_pairs


def test_cached_store_holds_what_decoding_gives_and_is_reused(tmp_path, sr_folder, monkeypatch):
    monkeypatch.setenv("QNAS_CACHE", str(tmp_path / "cache"))
    folder = sr_folder(tmp_path / "data")
    store = cached_training_store(str(folder), 4, None)
    pairs = training_pairs(folder, 4)
    assert len(store) == len(pairs)
    for i, p in enumerate(pairs):
        lr, hr = store.get(i)
        assert isinstance(lr, np.memmap) and np.array_equal(lr, p.lr) and np.array_equal(hr, p.hr)
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    stamp = [f.stat().st_mtime_ns for f in files]
    cached_training_store(str(folder), 4, None)
    assert [f.stat().st_mtime_ns for f in files] == stamp  # decoded once


def test_a_changed_image_makes_a_new_cache(tmp_path, sr_folder, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("QNAS_CACHE", str(tmp_path / "cache"))
    folder = sr_folder(tmp_path / "data")
    a = cached_training_store(str(folder), 4, None)
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(folder / "HR" / "im0.png")
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(folder / "LR_bicubic" / "X4" / "im0.png")
    b = cached_training_store(str(folder), 4, None)
    assert b.get(0)[1].max() == 0 and a.get(0)[1].max() > 0


def _batches(ds, start, workers, n=3):
    return [b for b, _ in zip(patch_loader(ds, 4, start, workers), range(n))]


def test_patches_depend_on_their_index_alone(tmp_path, sr_folder):
    store = PairStore(pairs=training_pairs(sr_folder(tmp_path / "d"), 4))
    ds = PatchDataset(store, 4, 8, seed=3, length=64)
    serial = _batches(ds, 0, 0, n=4)
    parallel = _batches(ds, 0, 2, n=4)
    resumed = _batches(ds, 8, 0, n=2)  # a run resumed after two batches of 4
    for (a, b), (c, d) in zip(serial, parallel):
        assert torch.equal(a, c) and torch.equal(b, d)
    for (a, b), (c, d) in zip(serial[2:], resumed):
        assert torch.equal(a, c) and torch.equal(b, d)
    other = PatchDataset(store, 4, 8, seed=4, length=64)
    assert not torch.equal(serial[0][0], _batches(other, 0, 0, 1)[0][0])
    lr, hr = serial[0]
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 32, 32) and 0 <= lr.min() and lr.max() <= 1
