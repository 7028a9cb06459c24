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


def test_recipes_set_their_settings_and_options_override_them():
    from qnas_deploy.train import RECIPES

    d = TrainConfig.from_recipe("default")
    p = TrainConfig.from_recipe("paper", lr=5e-3)
    assert d == TrainConfig() and d.optimizer == "adam" and d.warmup > 0
    assert (p.optimizer, p.lr, p.momentum, p.weight_decay, p.warmup, p.recipe) == ("sgd", 5e-3, 0.9, 3e-7, 0.0, "paper")
    assert set(RECIPES) == {"default", "paper"}
    with pytest.raises(BadInput, match="recipe"):
        TrainConfig.from_recipe("fast")
    with pytest.raises(BadInput, match="fraction"):
        TrainConfig(float_warmup=1.0)


def test_a_checkpoint_from_before_recipes_resumes_as_appendix_d():
    cfg = TrainConfig.from_dict({"epochs": 2, "iters": 3, "lr": 1e-3, "optimizer": "sgd", "weight_decay": 3e-7})
    assert cfg.recipe == "paper" and cfg.warmup == 0 and cfg.float_warmup == 0


def test_lr_warms_up_linearly_then_decays_to_zero_by_cosine():
    from qnas_deploy.train import lr_factor

    cfg = TrainConfig(epochs=1, iters=100, warmup=0.1)
    f = [lr_factor(cfg, i) for i in range(100)]
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert f[10] == 1.0 and all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 1e-3
    assert lr_factor(TrainConfig(epochs=1, iters=100, warmup=0), 50) == pytest.approx(0.5)


def test_float_warmup_trains_the_float_network_first(tmp_path, tiny_spec, data, monkeypatch):
    from qnas_deploy.quant import HWGQAct, LSQWeightPerChannel

    seen = []
    real = LSQWeightPerChannel.forward

    def spy(self, w):
        seen.append(self.enabled)
        return real(self, w)

    monkeypatch.setattr(LSQWeightPerChannel, "forward", spy)
    cfg = TrainConfig(**{**TINY, "epochs": 1, "iters": 4, "float_warmup": 0.5})
    ck = train(tiny_spec, data, tmp_path / "f.pt", cfg, progress=False, log=_quiet)
    n = sum(1 for m in ck.model.modules() if isinstance(m, LSQWeightPerChannel) and m.bits < 32)
    # Two float iterations, then two quantized ones (and the calibration after them).
    assert seen[:2 * n] == [False] * (2 * n) and seen[2 * n:4 * n] == [True] * (2 * n)
    assert all(bool(m.initialized) for m in ck.model.modules() if isinstance(m, (HWGQAct, LSQWeightPerChannel))
               and m.bits < 32)


def test_cli_train_defaults_to_the_default_recipe(tmp_path, tiny_spec, sr_folder, capsys, monkeypatch):
    monkeypatch.setenv("QNAS_CACHE", str(tmp_path / "cache"))
    folder = sr_folder(tmp_path / "d")
    spec_path = tmp_path / "s.json"
    save(tiny_spec, spec_path)
    out = tmp_path / "m.pt"
    assert main(["train", str(spec_path), "--data", str(folder), "-o", str(out), "--epochs", "1", "--iters", "2",
                 "--batch", "2", "--patch", "8", "--no-progress", "--workers", "1"]) == 0
    cfg = load_checkpoint(out).record["config"]
    assert (cfg["recipe"], cfg["optimizer"], cfg["lr"]) == ("default", "adam", 2e-3)
    assert main(["train", str(spec_path), "--data", str(folder), "-o", str(tmp_path / "p.pt"), "--recipe", "paper",
                 "--epochs", "1", "--iters", "1", "--batch", "2", "--patch", "8", "--no-progress"]) == 0
    assert load_checkpoint(tmp_path / "p.pt").record["config"]["optimizer"] == "sgd"


def test_bf16_mixed_precision_trains_and_exports_exactly(tmp_path, tiny_spec, data, monkeypatch):
    """--amp bf16: the convolutions run in bfloat16, the quantizers in float32, and the
    trained model exports to a file onnxruntime runs equal to PyTorch (0 steps: evaluation
    and export do not use the low precision, so nothing of it reaches the file's grids)."""
    from qnas_deploy.exporters.export import export
    from qnas_deploy.runtimes import RUNTIMES

    dtypes = []
    real = torch.nn.functional.conv2d

    def spy(x, w, *a, **k):
        y = real(x, w, *a, **k)
        dtypes.append(y.dtype)
        return y

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    cfg = TrainConfig(**{**TINY, "amp": "bf16"})
    ck = train(tiny_spec, data, tmp_path / "b.pt", cfg, progress=False, log=_quiet)
    assert torch.bfloat16 in dtypes
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "b.pt").record["config"]["amp"] == "bf16"
    e = export(str(tmp_path / "b.pt"), tmp_path / "b.onnx", log=_quiet)
    x = (np.random.default_rng(0).random((13, 11, 3)) * 255).astype(np.uint8)
    y = RUNTIMES["onnxruntime"].image_runner(e.path, threads=1)(x)
    want = torch_runner(ck.model.eval())(x)
    assert np.array_equal(y, want)


def test_amp_choices_are_checked(tmp_path, tiny_spec, data):
    with pytest.raises(BadInput, match="amp must be one of"):
        TrainConfig(**{**TINY, "amp": "fp8"})
    with pytest.raises(BadInput, match="fp16 needs a CUDA device"):
        train(tiny_spec, data, tmp_path / "h.pt", TrainConfig(**{**TINY, "amp": "fp16"}), progress=False, log=_quiet)
    assert not (tmp_path / "h.pt").exists()
