"""Training, checkpoints, resume, eval and upscale on tiny images (seconds, not minutes)."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from qnas_deploy.checkpoint import load_checkpoint
from qnas_deploy.cli import main
from qnas_deploy.data import PatchSampler, training_pairs
from qnas_deploy.errors import BadInput
from qnas_deploy.imresize import imresize
from qnas_deploy.infer import tiled, torch_runner
from qnas_deploy.spec import save, uniform
from qnas_deploy.train import TrainConfig, train

TINY = dict(epochs=2, iters=2, batch=2, patch=8, lr=1e-3, optimizer="adam", calib_batches=2)


@pytest.fixture
def tiny_spec():
    return uniform("basic", {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1",
                             "upsample": "simple_3x3", "tail": "simple_3x3"}, 8, channels=6, blocks=1)


@pytest.fixture
def data(tmp_path, sr_folder):
    return training_pairs(sr_folder(tmp_path / "data"), 4)


def _quiet(_):
    pass


def test_patch_sampler_aligns_lr_and_hr(data):
    s = PatchSampler(data, 4, 8, seed=1)
    lr, hr = s.batch(3)
    assert lr.shape == (3, 3, 8, 8) and hr.shape == (3, 3, 32, 32)
    # Every LR patch is the bicubic downscale of its HR patch (rotation/flip applied to both).
    down = imresize((hr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), 0.25)
    assert np.abs(down.astype(int) - (lr[0].permute(1, 2, 0).numpy() * 255).round().astype(int))[2:-2, 2:-2].max() <= 1


def test_tiny_training_writes_a_calibrated_safe_checkpoint(tmp_path, tiny_spec, data):
    out = tmp_path / "m.pt"
    ck = train(tiny_spec, data, out, TrainConfig(**TINY), val_pairs=data[:1], progress=False, log=_quiet)
    raw = torch.load(out, weights_only=True)
    assert raw["calibrated"] and raw["record"]["epoch"] == 2 and len(raw["record"]["history"]) == 2
    assert np.isfinite(raw["record"]["val_psnr_db"])
    loaded = load_checkpoint(out, tiny_spec)
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), ck.model(x))


def test_resume_after_interruption_continues_the_same_run(tmp_path, tiny_spec, data):
    cfg = TrainConfig(**TINY)
    straight = train(tiny_spec, data, tmp_path / "a.pt", cfg, progress=False, log=_quiet)

    def stop(epoch, entry):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_spec, data, tmp_path / "b.pt", cfg, progress=False, log=_quiet, on_epoch_end=stop)
    assert load_checkpoint(tmp_path / "b.pt").record["epoch"] == 1
    resumed = train(tiny_spec, data, tmp_path / "b.pt", cfg, resume=True, progress=False, log=_quiet)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_finished_run(tmp_path, tiny_spec, data):
    cfg = TrainConfig(**TINY)
    train(tiny_spec, data, tmp_path / "a.pt", cfg, progress=False, log=_quiet)
    with pytest.raises(BadInput, match="finished run"):
        train(tiny_spec, data, tmp_path / "a.pt", cfg, resume=True, progress=False, log=_quiet)


def test_bad_checkpoints_are_one_line_errors(tmp_path, tiny_spec):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="not a readable checkpoint"):
        load_checkpoint(bad)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "qnas-deploy/checkpoint", "x": io.BytesIO(b"")}, evil)
    with pytest.raises(BadInput, match="refused to load"):
        load_checkpoint(evil)


def test_train_eval_upscale_cli(tmp_path, tiny_spec, capsys, sr_folder):
    folder = sr_folder(tmp_path / "set")
    spec_path = tmp_path / "found.json"
    save(tiny_spec, spec_path)
    ck = tmp_path / "m.pt"
    args = ["train", str(spec_path), "--data", str(folder), "-o", str(ck), "--epochs", "1", "--iters", "2",
            "--batch", "2", "--patch", "8", "--calib-batches", "1", "--no-progress"]
    assert main(args) == 0
    assert main(["eval", str(ck), "--data", str(folder), "--json", "-"]) == 0
    result = json.loads(capsys.readouterr().out)
    s = result["sets"][str(folder)]
    assert set(s["mean"]) == {"psnr_db", "ssim", "border_psnr_db", "border_max_error"} and len(s["images"]) == 3
    lr = folder / "LR_bicubic" / "X4" / "im0.png"
    out, cmp = tmp_path / "up.png", tmp_path / "cmp.png"
    assert main(["upscale", str(ck), str(lr), "-o", str(out), "--compare", str(cmp)]) == 0
    assert Image.open(out).size == (48, 48) and Image.open(cmp).size == (96, 48)
    assert main(["eval", str(tmp_path / "missing.pt"), "--data", str(folder)]) == 2
    assert main(["train", str(spec_path), "--data", str(tmp_path / "nope"), "-o", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_tiles_have_no_seams(tiny_spec):
    torch.manual_seed(0)
    from qnas_deploy.spaces import build_model

    model = build_model(tiny_spec).eval()
    run = torch_runner(model)
    img = np.random.default_rng(0).integers(0, 255, (30, 37, 3)).astype(np.uint8)
    run(img)  # an uncalibrated model: the first call sets the quantizer ranges
    whole = run(img)
    # Receptive field of this net: 7 convs of 3x3 at LR -> 7 pixels; overlap 8 covers it.
    assert np.array_equal(tiled(run, 4, tile=12, overlap=8)(img), whole)


def test_an_unwritable_output_is_found_before_the_first_epoch(tmp_path, tiny_spec, data, read_only_folder):
    out = read_only_folder
    logged = []
    for path, needle in ((out / "m.pt", "Permission denied"), (tmp_path / "nodir" / "m.pt", "does not exist")):
        with pytest.raises(BadInput, match=needle):
            train(tiny_spec, data, path, TrainConfig(**TINY), progress=False, log=logged.append)
    assert logged == []
