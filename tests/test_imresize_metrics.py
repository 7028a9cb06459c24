"""MATLAB-style bicubic, SR metrics, image loading, and the bicubic baseline on Set5/Set14."""
import json

import numpy as np
import pytest
from PIL import Image

from qnas_deploy.cli import main
from qnas_deploy.data import benchmark_pairs, default_datasets_root, load_image
from qnas_deploy.imresize import contributions, cubic, imresize
from qnas_deploy.metrics import psnr, rgb_to_y, ssim

DATASETS = default_datasets_root()
needs_data = pytest.mark.skipif(DATASETS is None or not (DATASETS / "Set5").is_dir(),
                                reason="../shared/datasets (Set5, Set14) is not beside the checkout")


def test_cubic_kernel_values():
    np.testing.assert_allclose(cubic(np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])),
                               [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0])


def test_weights_sum_to_one_and_constant_images_stay_constant():
    for n_in, n_out in [(40, 10), (10, 40), (17, 51)]:
        m = contributions(n_in, n_out, n_out / n_in)
        np.testing.assert_allclose(m.sum(axis=1), 1.0)
    img = np.full((16, 12, 3), 77, np.uint8)
    assert (imresize(img, 0.25) == 77).all() and (imresize(img, 4.0) == 77).all()


def test_upscale_by_integer_factor_shapes_and_dtype():
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    up = imresize(img, 3.0)
    assert up.shape == (21, 27, 3) and up.dtype == np.uint8
    assert imresize(img[..., 0], size=(14, 18)).shape == (14, 18)


def test_psnr_hand_checked():
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[5, 5] = 10  # MSE over the 8x8 region left after shaving 1: 100 / 64
    assert psnr(a, b, crop_border=1) == pytest.approx(10 * np.log10(255**2 / (100 / 64)))
    assert psnr(a, a, 1) == float("inf")


def test_y_channel_is_bt601_studio_range():
    assert rgb_to_y(np.array([[[0, 0, 0]]], np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.array([[[255, 255, 255]]], np.uint8))[0, 0] == pytest.approx(235.0)


def test_psnr_and_ssim_agree_with_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (48, 40), dtype=np.uint8).astype(np.float64)
    b = np.clip(a + rng.normal(0, 8, a.shape), 0, 255)
    assert psnr(a, b, 0, y_channel=False) == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=255))
    ref = skm.structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    # Same definition; scikit-image averages over a border-cropped region of the full filter.
    assert ssim(a, b, 0, y_channel=False) == pytest.approx(ref, abs=2e-3)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16"])
def test_image_modes_load_as_8_bit(mode, tmp_path):
    p = tmp_path / f"x_{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(p)
    else:
        Image.new(mode, (5, 4), 200 if mode in ("L", "P") else (10, 20, 30, 40)).save(p)
    img = load_image(p, rgb=True)
    assert img.dtype == np.uint8 and img.shape == (4, 5, 3)
    if mode == "I;16":
        assert (img == 255).all()


def test_corrupt_image_is_one_line_error(tmp_path, capsys):
    from qnas_deploy.errors import BadInput
    p = tmp_path / "broken.png"
    p.write_bytes(b"\x89PNG not really")
    with pytest.raises(BadInput, match="broken.png: not a readable image"):
        load_image(p)


@needs_data
@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_downscale_matches_published_lr_images(name):
    pairs = benchmark_pairs(DATASETS / name, 4)
    total = close = 0
    for p in pairs:
        d = np.abs(imresize(p.hr, 0.25).astype(int) - p.lr.astype(int))
        total += d.size
        close += (d <= 1).sum()
    assert close / total >= 0.99, close / total


@needs_data
def test_bicubic_baseline_reproduces_published_figures(capsys):
    assert main(["eval", "--bicubic", "--data", "Set5,Set14", "--datasets-root", str(DATASETS), "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sets"]["Set5"]["mean"]["psnr_db"] == pytest.approx(28.42, abs=0.02)
    assert result["sets"]["Set14"]["mean"]["psnr_db"] == pytest.approx(26.00, abs=0.02)
    assert len(result["sets"]["Set14"]["images"]) == 14
    assert set(result["sets"]["Set5"]["mean"]) == {"psnr_db", "ssim", "border_psnr_db", "border_max_error"}


def test_unknown_dataset_exits_2(tmp_path, capsys):
    assert main(["eval", "--bicubic", "--data", "NoSuchSet", "--datasets-root", str(tmp_path)]) == 2
    assert "NoSuchSet: no such folder" in capsys.readouterr().err


def test_border_error_sees_only_the_shaved_strip():
    """An error confined to the outer ``scale`` pixels is invisible to PSNR (it shaves them)
    and is what the border metric reports."""
    from qnas_deploy.metrics import border_error, psnr

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (32, 40, 3)).astype(np.uint8)
    img = ref.copy()
    img[:, 0] = np.clip(img[:, 0].astype(int) - 60, 0, 255)  # a dark first column
    assert psnr(img, ref, 4) == float("inf")
    b_psnr, b_max = border_error(img, ref, 4)
    assert b_psnr < 40 and 40 <= b_max <= 60
    assert border_error(ref, ref, 4) == (float("inf"), 0)
