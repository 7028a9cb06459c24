"""Running models on images: batched tiles, progress over tiles, and what `upscale` checks and says."""
import numpy as np
import pytest
import torch
from PIL import Image

import qnas_deploy._progress as progress
from qnas_deploy.cli import main
from qnas_deploy.imresize import imresize
from qnas_deploy.infer import tiled, torch_runner
from qnas_deploy.runtimes import open_model


def _image(h, w, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (max(h // 4, 2), max(w // 4, 2), channels)).astype(np.float64)
    return np.clip(imresize(base, size=(h, w)), 0, 255).round().astype(np.uint8)


def _unbatched(run):
    """The same runner without its ``batch`` attribute: every tile on its own."""
    return lambda lr: run(lr)


def _batch_sizes(model):
    sizes = []
    model.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    return sizes


def _tiny_model(calibrated: bool):
    """A Basic net of 6 channels and one block (seconds, not minutes, on two cores)."""
    from qnas_deploy.calibrate import calibrate
    from qnas_deploy.spaces import build_model
    from qnas_deploy.spec import uniform

    spec = uniform("basic", {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1",
                             "upsample": "simple_3x3", "tail": "simple_3x3"}, 8, channels=6, blocks=1)
    torch.manual_seed(0)
    model = build_model(spec)
    if calibrated:
        calibrate(model, [torch.rand(2, 3, 12, 12) for _ in range(2)])
    return model.eval()


def test_batched_tiles_give_the_pixels_of_unbatched_ones():
    model = _tiny_model(calibrated=True)
    sizes = _batch_sizes(model)
    assert not hasattr(torch_runner(model), "batch")  # on CPU each tile runs alone: batches measured slower
    run = torch_runner(model, batch_tiles=True)
    img = _image(45, 61)
    alone = tiled(_unbatched(run), 4, tile=16, overlap=8)(img)
    assert max(sizes) == 1
    sizes.clear()
    batched = tiled(run, 4, tile=16, overlap=8)(img)
    assert np.array_equal(batched, alone)
    assert sizes[0] == 1 and max(sizes) > 1 and sum(sizes) == 3 * 4  # 12 tiles, the first alone
    # ... and both are the untiled result: the overlap covers this net's receptive field.
    assert np.array_equal(batched, run(img))


def test_an_uncalibrated_model_sets_its_ranges_on_the_same_first_tile():
    """A model that was never calibrated takes its ranges from its first input; batching must
    not change which input that is."""
    img = _image(40, 40, seed=3)
    outs = [tiled(run if batched else _unbatched(run), 4, tile=16, overlap=8)(img)
            for batched, run in ((False, torch_runner(_tiny_model(False))),
                                 (True, torch_runner(_tiny_model(False), batch_tiles=True)))]
    assert np.array_equal(outs[0], outs[1])


def test_the_checkpoint_path_runs_in_inference_mode(zoo_model):
    model = zoo_model("espcn_w8a8")
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append((torch.is_inference_mode_enabled(),
                                                                  out.requires_grad)))
    torch_runner(model)(_image(8, 8))
    assert seen == [(True, False)]


class _Bar:
    made = []

    def __init__(self, total=None, desc="", enabled=True, **kw):
        self.total, self.enabled, self.n = total, enabled, 0
        _Bar.made.append(self)

    def update(self, k=1):
        self.n += k

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def bars(monkeypatch):
    _Bar.made = []
    monkeypatch.setattr(progress, "bar", _Bar)
    return _Bar.made


def test_progress_counts_the_tiles_of_every_backend(bars, zoo_model, espcn_files):
    runners = {"pytorch": torch_runner(zoo_model("espcn_w8a8"))}
    runners.update({s: open_model(p).run for s, p in espcn_files.items()})
    img = _image(20, 20)
    for name, run in runners.items():
        bars.clear()
        tiled(run, 4, tile=8, overlap=2, progress=True)(img)
        assert [(b.total, b.n, b.enabled) for b in bars] == [(9, 9, True)], name


def test_upscale_shows_progress_unless_told_not_to(bars, tmp_path, zoo_checkpoint):
    img = tmp_path / "lr.png"
    Image.fromarray(_image(20, 20)).save(img)
    ck = str(zoo_checkpoint("espcn_w8a8"))
    assert main(["upscale", ck, str(img), "-o", str(tmp_path / "a.png"), "--tile", "8"]) == 0
    assert main(["upscale", ck, str(img), "-o", str(tmp_path / "b.png"), "--tile", "8", "--no-progress"]) == 0
    assert [(b.total, b.n, b.enabled) for b in bars] == [(9, 9, True), (9, 9, False)]


def test_progress_bars_are_off_when_stderr_is_not_a_terminal(monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, enabled, off in ((io.StringIO(), True, True), (Terminal(), True, False), (Terminal(), False, True)):
        monkeypatch.setattr("sys.stderr", stream)
        with progress.bar(3, "x", enabled) as b:
            assert bool(b.disable) is off


@pytest.mark.parametrize("command", ["upscale", "eval"])
def test_files_exported_without_trained_weights_are_refused(command, tmp_path, capsys, espcn_files, sr_folder):
    img, out = tmp_path / "lr.png", tmp_path / "up.png"
    Image.fromarray(_image(12, 12)).save(img)
    folder = sr_folder(tmp_path / "set", n=1, size=32)
    args = {"upscale": [str(img), "-o", str(out)], "eval": ["--data", str(folder)]}[command]
    for f in espcn_files.values():
        assert main([command, f, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "without trained weights" in err[0] and "--weights" in err[0]
        assert "--allow-initialised" in err[0] and not out.exists()
        assert main([command, f, *args, "--allow-initialised"]) == 0
        capsys.readouterr()
        out.unlink(missing_ok=True)


def test_dropped_alpha_is_said_in_one_warning_line(tmp_path, capsys, zoo_checkpoint):
    rgba = np.dstack([_image(12, 12), np.full((12, 12), 128, np.uint8)])
    img = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(img)
    assert main(["upscale", str(zoo_checkpoint("espcn_w8a8")), str(img), "-o", str(tmp_path / "up.png")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warnings = [l for l in err if l.startswith("warning:")]
    assert len(warnings) == 1 and "alpha" in warnings[0] and str(img) in warnings[0]
    assert Image.open(tmp_path / "up.png").mode == "RGB"


def test_a_failing_second_output_leaves_no_first_one(tmp_path, capsys, zoo_checkpoint):
    img = tmp_path / "lr.png"
    Image.fromarray(_image(12, 12)).save(img)
    ok, bad = tmp_path / "ok.png", tmp_path / "nodir" / "c.png"
    assert main(["upscale", str(zoo_checkpoint("espcn_w8a8")), str(img), "-o", str(ok), "--compare", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.png"]


def test_grey_image_comes_out_grey(tmp_path):
    """A grey PNG through upscale is a grey PNG: the network's three output channels differ
    (a colour cast on grey input, [207, 190, 182] on a top row), so the result is made grey."""
    from PIL import Image

    from qnas_deploy.cli import main
    from qnas_deploy.exporters.export import export

    model = tmp_path / "m.onnx"
    export("espcn_w8a8", str(model), log=lambda _: None)
    img = tmp_path / "grey.png"
    Image.fromarray(np.tile(np.linspace(30, 220, 20).astype(np.uint8), (16, 1))).save(img)
    out = tmp_path / "grey_x4.png"
    assert main(["upscale", str(model), str(img), "-o", str(out), "--allow-initialised"]) == 0
    with Image.open(out) as o:
        assert o.mode == "L" and o.size == (80, 64)
