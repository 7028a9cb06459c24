"""The zoo's shipped weights: safe to load, made by a recorded command, better than bicubic,
and exported files that compute exactly what they compute in PyTorch."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from qnas_deploy.checkpoint import load_checkpoint
from qnas_deploy.cli import main
from qnas_deploy.data import default_datasets_root
from qnas_deploy.zoo import model_file, names, shipped_weights, with_weights

SHIPPED = with_weights()


def test_weights_ship_for_the_entries_users_start_from():
    assert {"espcn_w8a8", "mobile_w8a8", "basic_lrtail_bicubic"} <= set(SHIPPED)


def test_a_zoo_name_without_weights_says_which_have_them():
    bare = next(n for n in names() if n not in SHIPPED)
    with pytest.raises(Exception, match="ships no trained weights"):
        model_file(bare)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_safely_and_record_how_they_were_made(name):
    raw = torch.load(shipped_weights(name), map_location="cpu", weights_only=True)
    made = raw["record"]["made_by"]
    assert made["command"].startswith("python benchmarks/train_zoo.py")
    assert {"recipe", "seed", "data", "finished", "machine", "train_seconds", "scores"} <= set(made)
    ck = load_checkpoint(shipped_weights(name))
    assert ck.calibrated and ck.spec.name == name and ck.spec.weight_grid == "narrow"


def _benchmark_set(name: str):
    """The shared benchmark set ``name``: skipped where it is missing, but a failure in CI
    (``CI`` set), which has ../shared beside the clone."""
    import os

    root = default_datasets_root()
    if root is None or not (root / name).is_dir():
        why = f"{name} not found (../shared/datasets or $QNAS_DATASETS)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return root / name


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """Three 96x96 crops of Set5 in benchmark layout (HR and MATLAB-made x4 LR)."""
    set5 = _benchmark_set("Set5")
    from qnas_deploy.data import benchmark_pairs
    from qnas_deploy.imresize import imresize

    folder = tmp_path_factory.mktemp("crops")
    (folder / "HR").mkdir()
    (folder / "LR_bicubic" / "X4").mkdir(parents=True)
    for p in benchmark_pairs(set5, 4)[:3]:
        hr = p.hr[:96, :96]
        Image.fromarray(hr).save(folder / "HR" / f"{p.name}.png")
        Image.fromarray(imresize(hr, 0.25)).save(folder / "LR_bicubic" / "X4" / f"{p.name}.png")
    return folder


@pytest.mark.parametrize("name", SHIPPED)
def test_upscale_by_zoo_name_beats_bicubic(name, crops, tmp_path, capsys):
    from qnas_deploy.data import benchmark_pairs
    from qnas_deploy.imresize import imresize
    from qnas_deploy.metrics import psnr

    pair = benchmark_pairs(default_datasets_root() / "Set5", 4)[0]  # a whole image: 128x128 LR
    lr, out = tmp_path / "lr.png", tmp_path / "up.png"
    Image.fromarray(pair.lr).save(lr)
    assert main(["upscale", name, str(lr), "-o", str(out), "--no-progress"]) == 0
    y = np.asarray(Image.open(out))
    bicubic = np.clip(imresize(pair.lr, 4.0), 0, 255).round().astype(np.uint8)
    assert y.shape == pair.hr.shape and psnr(y, pair.hr, 4) > psnr(bicubic, pair.hr, 4) + 0.2


@pytest.mark.parametrize("name", SHIPPED)
def test_exports_of_the_shipped_weights_are_exact_in_every_backend(name, crops, tmp_path, capsys):
    onnx, tfl = tmp_path / f"{name}.onnx", tmp_path / f"{name}.tflite"
    assert main(["export", name, "-o", str(onnx)]) == 0
    assert main(["export", name, "--format", "tflite", "-o", str(tfl), "--input-size", "24x24"]) == 0
    assert "shipped trained weights" in capsys.readouterr().err
    js = tmp_path / "parity.json"
    # Exit 0 or 1: LiteRT builtin's x86 kernels round some requantisations otherwise than
    # PyTorch (README, exactness table); what it computes is checked against its reference.
    assert main(["bench", "parity", name, str(onnx), str(tfl), "--data", str(crops), "--json", str(js)]) in (0, 1)
    files = json.loads(js.read_text())["files"]
    runtimes = [k for k in files if k not in ("pytorch", "reference")]
    assert len(runtimes) == 3
    for k in runtimes:  # 0 steps: each runtime's integer arithmetic is reproduced exactly
        assert files[k]["min_identical_pixels"] == 1.0 and files[k]["max_abs_diff"] == 0, k
    for k in (k for k in runtimes if "builtin" not in k):  # and equals PyTorch's pixels
        assert abs(files[k]["max_abs_delta_psnr_db"]) < 1e-9, k  # identical pixels: 0 but for float sums
        assert min(i["identical_to_pytorch"] for i in files[k]["images"].values()) == 1.0, k


@pytest.mark.slow  # ~15 s
def test_export_init_keeps_initialised_weights(tmp_path, capsys):
    out = tmp_path / "i.onnx"
    assert main(["export", SHIPPED[0], "--init", "-o", str(out)]) == 0
    assert "initialised" in capsys.readouterr().err


@pytest.mark.parametrize("name", SHIPPED)
def test_openvino_file_of_the_shipped_weights_is_exact(name, tmp_path, capsys):
    """The openvino target's file in OpenVINO's CPU plugin against the reference in that
    target's arithmetic and against PyTorch: 0 steps on a whole Set14 image (144x180 LR). RFDN's concatenation of
    convs on four grids was 90% identical here before each input got an explicit requant
    onto the concat's grid (concat_on_grid): OpenVINO's low-precision transformations align
    the convs' output intervals to the concat's otherwise than its arithmetic model."""
    from qnas_deploy.data import benchmark_pairs

    set14 = _benchmark_set("Set14")
    folder = tmp_path / "one"
    (folder / "HR").mkdir(parents=True)
    (folder / "LR_bicubic" / "X4").mkdir(parents=True)
    p = next(p for p in benchmark_pairs(set14, 4) if p.name == "img_002")
    Image.fromarray(p.hr).save(folder / "HR" / "img_002.png")
    Image.fromarray(p.lr).save(folder / "LR_bicubic" / "X4" / "img_002.png")
    onnx, js = tmp_path / f"{name}.onnx", tmp_path / "parity.json"
    assert main(["export", name, "-o", str(onnx), "--target", "openvino"]) == 0
    assert main(["bench", "parity", name, str(onnx), "--data", str(folder), "--onnx-runtimes", "openvino",
                 "--json", str(js)]) in (0, 1)
    files = json.loads(js.read_text())["files"]
    ov = [k for k in files if "OpenVINO" in k]
    assert ov and files[ov[0]]["min_identical_pixels"] == 1.0 and files[ov[0]]["max_abs_diff"] == 0
    # and its pixels are PyTorch's: every add, BatchNorm and conv of the shipped weights is
    # exact in OpenVINO's arithmetic (add_scales, pointwise_exact, conv_scales)
    assert min(i["identical_to_pytorch"] for i in files[ov[0]]["images"].values()) == 1.0


@pytest.mark.parametrize("name", SHIPPED)
def test_tflite_file_of_the_shipped_weights_gives_pytorchs_pixels_on_aarch64_builtin(name):
    """LiteRT's builtin kernels on aarch64 (the arithmetic every aarch64 cell of the matrix
    checks 100%) compute the shipped TFLite file to PyTorch's pixels on a Set5 crop:
    their full convs round once (ruy), checked by calibration's conv snap; the depthwise 1x1
    ones that round twice are re-represented or written dense (pointwise_exact)."""
    from qnas_deploy.data import benchmark_pairs
    from qnas_deploy.exporters import reference
    from qnas_deploy.exporters.builder import lower_model
    from qnas_deploy.exporters.export import lower, prepare
    from qnas_deploy.exporters.options import ExportOptions
    from qnas_deploy.zoo import shipped_weights

    p = benchmark_pairs(_benchmark_set("Set5"), 4)[0]
    x = np.ascontiguousarray(p.lr[32:96, 32:96].transpose(2, 0, 1)[None])  # 64x64 of its 128x128 LR
    model = prepare(str(shipped_weights(name)), log=lambda m: None).model
    g = lower(model, ExportOptions(format="tflite"))
    assert np.array_equal(reference.run(g, x, "litert-builtin-aarch64"), reference.run(lower_model(model), x))
