"""Data-parallel training under torchrun (2 CPU processes, gloo) against one process."""
import shutil
import subprocess
import sys

import pytest
import torch

from qnas_deploy.cli import main
from qnas_deploy.spec import save, uniform

OPS = {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1", "upsample": "simple_3x3", "tail": "simple_3x3"}


def _run(tmp_path, sr_folder, monkeypatch, bits, extra):
    monkeypatch.setenv("QNAS_CACHE", str(tmp_path / "cache"))
    data = sr_folder(tmp_path / "d")
    spec = tmp_path / "s.json"
    save(uniform("basic", OPS, bits, channels=6, blocks=1), spec)  # with ADQ: BatchNorm over the batch
    args = ["train", str(spec), "--data", str(data), "--epochs", "2", "--iters", "3", "--batch", "4", "--patch", "8",
            "--no-progress", "--calib-batches", "2", *extra]
    assert main(args + ["-o", str(tmp_path / "one.pt")]) == 0
    cli = shutil.which("qnas-deploy") or pytest.skip("qnas-deploy is not on PATH")
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", cli, *args,
                        "-o", str(tmp_path / "two.pt")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    return one, two, r.stderr


def _worst(one, two):
    """The largest difference of any trained tensor. Quantizer ranges are compared apart, in
    steps of the add-scale snap (calibration's step 3 moves a range to the nearest scale at
    which every add is exact, in relative steps of 2^-21; weights 1e-8 apart can make a
    neighbouring candidate the nearest exact one): at most 8 steps apart."""
    from qnas_deploy.exporters.add_scales import STEP

    a, b = one["model"], two["model"]
    ranges = [k for k in a if k.endswith("absmax")]
    steps = max((float(((a[k].double() - b[k].double()) / a[k].double()).abs().max()) / STEP for k in ranges),
                default=0.0)
    assert steps <= 8, steps
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a
               if a[k].is_floating_point() and k not in ranges)


def test_two_processes_train_what_one_does_quantized(tmp_path, sr_folder, monkeypatch):
    """SGD on the quantized net: every statistic is of the global batch, so the only
    difference is the order of float32 sums (gradients averaged across ranks): 1e-6 is
    about 100 float32 ulps of the weights after 6 steps (measured: 1.5e-8; the snapped
    ranges 4 snap steps apart on an AMD EPYC, 0 on an Intel Xeon)."""
    one, two, err = _run(tmp_path, sr_folder, monkeypatch, 8, ["--recipe", "paper", "--lr", "0.05"])
    assert _worst(one, two) <= 1e-6
    assert two["record"]["history"][0]["processes"] == 2
    assert err.count("wrote ") == 1  # rank 0 alone writes and speaks


def test_two_processes_train_what_one_does_float_adam(tmp_path, sr_folder, monkeypatch):
    """The default recipe (Adam) on the float net: also within float32 summation order.
    (On a quantized net Adam's normalised step amplifies the rare fake-quant rounding flips
    the summation order causes where gradients are small: see the README.)"""
    one, two, _ = _run(tmp_path, sr_folder, monkeypatch, 32, [])
    assert _worst(one, two) <= 1e-6
    l1 = [h["loss"] for h in one["record"]["history"]]
    l2 = [h["loss"] for h in two["record"]["history"]]
    assert l1 == pytest.approx(l2, rel=1e-5)  # the logged loss is the global batch's


def test_a_batch_that_does_not_divide_is_refused(tmp_path, sr_folder, monkeypatch):
    from qnas_deploy import distributed
    from qnas_deploy.errors import BadInput
    from qnas_deploy.train import TrainConfig, train
    from qnas_deploy.data import training_pairs

    monkeypatch.setattr(distributed, "world", lambda: 2)
    monkeypatch.setattr(distributed, "init_from_env", lambda device: None)
    with pytest.raises(BadInput, match="divide"):
        train(uniform("basic", OPS, 8, channels=6, blocks=1), training_pairs(sr_folder(tmp_path / "d"), 4),
              tmp_path / "m.pt", TrainConfig(batch=3, patch=8, epochs=1, iters=1), progress=False)
