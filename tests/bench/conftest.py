"""Fixtures of the bench tests: a tiny trained checkpoint with its exports, and specs from layer lists."""
import pytest

from qnas_deploy.cli import main
from qnas_deploy.data import training_pairs
from qnas_deploy.spec import uniform
from qnas_deploy.train import TrainConfig, train


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sr_folder):
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


@pytest.fixture
def spec_of():
    """``(space, [[name, op, w_bits, a_bits], ...], channels, blocks) -> ArchSpec``."""
    from qnas_deploy.spaces import get_space
    from qnas_deploy.spec import ArchSpec, LayerSpec

    def make(space, layers, channels=None, blocks=None):
        sp = get_space(space)
        return ArchSpec(space=space, scale=4, channels=channels or sp.default_channels,
                        blocks=blocks or sp.default_blocks, layers=tuple(LayerSpec(*l) for l in layers))
    return make
