"""Fixtures shared across test folders (tests import no other test module)."""
import pytest


@pytest.fixture
def latency_table():
    """A factory of synthetic per-layer latency tables (the format ``bench bitops --table-json``
    writes) with every small-set candidate of a space at uniform bits.

    ``ms(op, bits, slot_name, backend)`` gives each entry's milliseconds. Every slot is
    recorded at ``size`` (a slot's size only keys its entries), so slots of the same
    channels share their entries, as in a measured table: the last slot's ``ms`` wins."""
    from qnas_deploy.cost.latency import FORMAT, key
    from qnas_deploy.spaces import get_space

    def make(space="basic", channels=6, blocks=1, bits=(4, 8), ms=lambda op, b, name, backend: 1.0,
             backends=("onnxruntime",), size=(8, 8), fixed_ms=None) -> dict:
        sp = get_space(space)
        slots = sp.layout(channels, blocks, 4)
        entries = {key(op, b, b, s.c_in, s.c_out, *size): {f"{be}_ms": float(ms(op, b, s.name, be)) for be in backends}
                   for s in slots for op in sp.ops_for(s.role, "small") for b in bits}
        return {"format": FORMAT, "version": 1, "space": space, "channels": channels, "blocks": blocks,
                "bits": list(bits), "backends": list(backends),
                "slots": {s.name: {"c_in": s.c_in, "c_out": s.c_out, "height": size[0], "width": size[1]}
                          for s in slots},
                "fixed_ms": {be: fixed_ms for be in backends}, "entries": entries}

    return make


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch):
    """A folder where creating a file fails with EACCES (as on a read-only mount), whoever
    runs the test (root ignores permission bits, so ``tempfile.mkstemp`` is patched)."""
    import errno
    import tempfile

    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kw):
        if str(dir) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    return folder


@pytest.fixture(scope="session")
def sr_folder():
    """A factory of benchmark-layout image folders: ``folder/HR/im{i}.png`` and their
    bicubic x4 downscales in ``folder/LR_bicubic/X4``."""
    import numpy as np
    from PIL import Image

    from qnas_deploy.imresize import imresize

    def make(folder, n=3, size=48, seed=0):
        rng = np.random.default_rng(seed)
        (folder / "HR").mkdir(parents=True)
        (folder / "LR_bicubic" / "X4").mkdir(parents=True)
        for i in range(n):
            base = rng.integers(0, 255, (size // 8, size // 8, 3)).astype(np.float64)
            hr = np.clip(imresize(base, size=(size, size)), 0, 255).round().astype(np.uint8)
            Image.fromarray(hr).save(folder / "HR" / f"im{i}.png")
            Image.fromarray(imresize(hr, 0.25)).save(folder / "LR_bicubic" / "X4" / f"im{i}.png")
        return folder

    return make


@pytest.fixture(scope="session")
def zoo_model():
    """A factory of zoo networks with seeded weights, calibrated on smooth random images, in eval mode."""
    import copy

    import torch

    from qnas_deploy.calibrate import calibrate
    from qnas_deploy.spaces import build_model
    from qnas_deploy.zoo import load_zoo

    made = {}

    def make(name):
        if name not in made:  # calibration (with its exactness snaps) once per session
            torch.manual_seed(0)
            m = build_model(load_zoo(name))
            g = torch.Generator().manual_seed(1)
            calibrate(m, [torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(24, 24),
                                                           mode="bilinear") for _ in range(3)])
            made[name] = m.eval()
        return copy.deepcopy(made[name])  # a test may change its copy

    return make


@pytest.fixture(scope="session")
def espcn_files(tmp_path_factory):
    """``{".onnx": path, ".ort": path, ".tflite": path}``: the espcn_w8a8 zoo entry exported
    in each format (initialised weights; the TFLite file allocated for 16x20 LR images)."""
    from qnas_deploy.exporters.export import export

    root = tmp_path_factory.mktemp("espcn")
    out = {".onnx": str(root / "m.onnx"), ".ort": str(root / "m.ort"), ".tflite": str(root / "m.tflite")}
    export("espcn_w8a8", out[".onnx"], fmt="onnx", log=lambda _: None)
    export("espcn_w8a8", out[".ort"], fmt="ort", log=lambda _: None)
    export("espcn_w8a8", out[".tflite"], fmt="tflite", input_size=(16, 20), log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def zoo_checkpoint(tmp_path_factory, zoo_model):
    """A factory of calibrated checkpoints of ``zoo_model``'s networks: ``name`` -> path of ``name.pt``."""
    from qnas_deploy.checkpoint import save_checkpoint
    from qnas_deploy.zoo import load_zoo

    root = tmp_path_factory.mktemp("checkpoints")

    def make(name):
        path = root / f"{name}.pt"
        if not path.is_file():
            save_checkpoint(path, load_zoo(name), zoo_model(name), calibrated=True)
        return path

    return make


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sr_folder):
    """A tiny trained Basic checkpoint and its .onnx and .tflite: (root, data folder, checkpoint, [files])."""
    from qnas_deploy.cli import main
    from qnas_deploy.data import training_pairs
    from qnas_deploy.spec import uniform
    from qnas_deploy.train import TrainConfig, train

    root = tmp_path_factory.mktemp("bench")
    data = sr_folder(root / "data", n=2, size=48)
    spec = uniform("basic", {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1",
                             "upsample": "simple_3x3", "tail": "simple_3x3"}, 4, channels=6, blocks=1)
    ck = root / "m.pt"
    train(spec, training_pairs(data, 4), ck, TrainConfig(epochs=1, iters=2, batch=2, patch=8, calib_batches=1),
          progress=False, log=lambda m: None)
    files = []
    for fmt in ("onnx", "tflite"):
        out = root / f"m.{fmt}"
        assert main(["export", str(ck), "--format", fmt, "-o", str(out), "--input-size", "12x12"]) == 0
        files.append(str(out))
    return root, str(data), str(ck), files


@pytest.fixture(scope="session")
def aarch64_env():
    """The emulated aarch64 machine (``qnas-deploy target setup aarch64``): skipped where it
    is not set up, a failure in CI (``CI`` set), which must set it up."""
    import os

    from qnas_deploy.emulation import aarch64
    from qnas_deploy.errors import QnasError

    try:
        return aarch64.load()
    except QnasError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set up the aarch64 environment: {e}")
        pytest.skip(str(e))
