"""The emulated aarch64 machine: its set-up pieces, and exported files run there.

Tolerance: 0 differing pixels for onnxruntime and LiteRT + XNNPACK on aarch64 against the
reference in their (CPU-independent) arithmetic, and for LiteRT's builtin kernels against
the aarch64 builtin arithmetic. The environment is made by ``qnas-deploy target setup
aarch64`` (the README's install does it); without it these tests skip, except in CI
(``CI`` set), where a missing environment is a failure.
"""
import json

import numpy as np
import pytest

from qnas_deploy.cli import main
from qnas_deploy.emulation import aarch64
from qnas_deploy.errors import BadInput, QnasError


def test_target_names_parse():
    assert aarch64.parse_target("aarch64").name == aarch64.DEFAULT_CPU
    assert aarch64.parse_target("aarch64:cortex-a72").qemu == "cortex-a72"
    assert aarch64.parse_target("aarch64:max").qemu == "max,sme=off"  # qemu 7.2's SME is wrong
    for bad in ("x86", "aarch64:cortex-x9", "arm64:max"):
        with pytest.raises(BadInput):
            aarch64.parse_target(bad)


def test_cpuinfo_says_what_the_emulated_cpu_reported():
    probe = {"midr": 0x414FD0C1, "hwcap": 0x119FFB, "hwcap2": 0}
    text = aarch64.cpuinfo(probe, 2)
    assert text.count("processor\t:") == 2
    assert "CPU implementer\t: 0x41" in text and "CPU part\t: 0xd0c" in text and "CPU variant\t: 0x4" in text
    assert "CPU revision\t: 1" in text
    feats = aarch64.features(probe)
    assert "asimddp" in feats and "i8mm" not in feats  # neoverse-n1: dot product, no i8mm
    assert "i8mm" in aarch64.features({"midr": 0, "hwcap": 0, "hwcap2": 1 << 13})


def test_one_environment_per_set_of_versions(tmp_path):
    a = aarch64.env_folder({"onnxruntime": "1.32.0", "ai-edge-litert": "2.3.0"}, tmp_path)
    b = aarch64.env_folder({"onnxruntime": "1.33.0", "ai-edge-litert": "2.3.0"}, tmp_path)
    assert a.parent == b.parent == tmp_path and a != b


def test_missing_tools_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(aarch64.shutil, "which", lambda name: None)
    with pytest.raises(QnasError, match="qemu-user-static"):
        aarch64.setup(tmp_path, log=lambda m: None)
    assert not any(tmp_path.iterdir())


def test_missing_environment_says_how_to_make_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QNAS_DEPLOY_CACHE", str(tmp_path))
    with pytest.raises(QnasError, match="qnas-deploy target setup aarch64"):
        aarch64.load()


@pytest.fixture(scope="session")
def env(aarch64_env):
    return aarch64_env


@pytest.mark.parametrize("cpu", aarch64.MATRIX_CPUS)
def test_small_model_is_exact_on_aarch64(env, exported, cpu):
    """The tiny trained Basic model's .onnx and .tflite on each emulated CPU class (no dot
    product, dot product, i8mm): every pixel as the reference computes it."""
    root, data, ck, files = exported
    out = root / f"parity-{cpu}.json"
    rc = main(["bench", "parity", ck, *files, "--data", data, "--tflite-kernels", "xnnpack,builtin",
               "--target", f"aarch64:{cpu}", "--json", str(out), "--tolerance-db", "100"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["machine"].startswith(f"aarch64 {cpu}")
    rows = {r["runtime"]: r for k, r in result["files"].items() if k not in ("pytorch", "reference")}
    assert set(rows) == {"onnxruntime", "litert-xnnpack", "litert-builtin"}
    for name, row in rows.items():
        assert row["machine"].startswith("aarch64"), name
        assert row["min_identical_pixels"] == 1.0 and row["max_abs_diff"] == 0, (name, row["arithmetic"])
    assert rows["litert-builtin"]["arithmetic"] == "litert-builtin-aarch64"


def test_emulated_latency_is_labelled(env, exported, tmp_path):
    root, data, ck, files = exported
    md, js = tmp_path / "lat.md", tmp_path / "lat.json"
    assert main(["bench", "latency", files[0], "--size", "12x12", "--threads", "1", "--runs", "2", "--warmup", "1",
                 "--target", "aarch64:cortex-a72", "--md", str(md), "--json", str(js)]) == 0
    assert "EMULATED" in md.read_text()
    m = json.loads(js.read_text())["machine"]
    assert m["machine"] == "aarch64" and m["cpu"] == "cortex-a72" and "emulated" in m["emulated"]


def test_guest_runs_the_hosts_runner_code(env, exported):
    """Grey and colour images, as the host's image runners see them (grey_aware there too)."""
    from qnas_deploy.runtimes import RUNTIMES, grey_aware

    root, data, ck, files = exported
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 13, 3), dtype=np.uint8), rng.integers(0, 256, (9, 12), dtype=np.uint8)]
    outs = aarch64.run_images(env, aarch64.CPUS["cortex-a72"], [(files[0], "onnxruntime")], images)
    host = grey_aware(RUNTIMES["onnxruntime"].image_runner(files[0]))
    for im, o in zip(images, outs[0]):
        assert o.shape == host(im).shape and np.array_equal(o, host(im))


def _zoo_quantized():
    from qnas_deploy.zoo import load_zoo, names

    return [n for n in names() if not load_zoo(n).float_only]


@pytest.mark.slow
@pytest.mark.parametrize("cpu", aarch64.MATRIX_CPUS)
@pytest.mark.parametrize("name", _zoo_quantized())
def test_zoo_is_exact_on_aarch64(env, zoo_checkpoint, tmp_path, name, cpu):
    """Every quantized zoo entry (seeded weights) as .onnx and .tflite, and packed INT4 for
    LiteRT's builtin kernels where it has 4-bit layers, on each emulated CPU class."""
    from PIL import Image

    from qnas_deploy.zoo import load_zoo

    ck = zoo_checkpoint(name)
    files = []
    for fmt in ("onnx", "tflite"):
        files.append(str(tmp_path / f"{name}.{fmt}"))
        assert main(["export", str(ck), "--format", fmt, "-o", files[-1], "--input-size", "24x24"]) == 0
    if any(l.w_bits == 4 for l in load_zoo(name).layers):
        files.append(str(tmp_path / f"{name}.int4.tflite"))
        assert main(["export", str(ck), "--format", "tflite", "--int4", "packed", "--target", "litert-builtin",
                     "-o", files[-1], "--input-size", "24x24"]) == 0
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for sub, size in (("HR", (96, 128)), ("LR_bicubic/X4", (24, 32))):
        (data / sub).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(data / sub / f"im{i}.png")
    out = tmp_path / "parity.json"
    main(["bench", "parity", str(ck), *files, "--data", str(data), "--target", f"aarch64:{cpu}", "--json", str(out),
          "--tolerance-db", "100"])
    result = json.loads(out.read_text())
    for label, row in result["files"].items():
        if row.get("runtime") not in (None, "numpy"):
            assert row["min_identical_pixels"] == 1.0, (label, row["arithmetic"], row["max_abs_diff"])


def test_ort_file_is_exact_on_aarch64(env, exported):
    """The ORT format file (made for arm) in the aarch64 build of onnxruntime, on a CPU
    with the dot product and on one without."""
    root, data, ck, _ = exported
    ort_file = root / "m.ort"
    if not ort_file.is_file():
        assert main(["export", ck, "--format", "ort", "-o", str(ort_file)]) == 0
    for cpu in ("cortex-a72", "neoverse-n1"):
        out = root / f"parity-ort-{cpu}.json"
        assert main(["bench", "parity", ck, str(ort_file), "--data", data, "--target", f"aarch64:{cpu}",
                     "--json", str(out), "--tolerance-db", "100"]) == 0
        rows = [r for k, r in json.loads(out.read_text())["files"].items() if k not in ("pytorch", "reference")]
        assert [r["runtime"] for r in rows] == ["onnxruntime-ort"]
        assert rows[0]["machine"].startswith("aarch64")
        assert rows[0]["min_identical_pixels"] == 1.0 and rows[0]["max_abs_diff"] == 0


def _edge_weight_file(zoo_model, tmp_path, grid: str) -> str:
    """``espcn_w8a8`` with the int8 weight -128 where int8 activations are -128, as trained 8-bit
    weights on the full grid may meet them, on ``grid``, as a LiteRT file: the first conv's
    channels 0-15 are ReLU'd to zero everywhere (int8 -128 in the file), and the second conv
    weighs them -128 (positive weights elsewhere keep its outputs above zero)."""
    import torch

    from qnas_deploy.exporters.export import ExportOptions, lower, write
    from qnas_deploy.ops import QConv2d
    from qnas_deploy.quant.modules import apply_weight_grid

    model = zoo_model("espcn_w8a8")
    first, second = (next(c for c in model.layers[k].modules() if isinstance(c, QConv2d)) for k in ("conv_0", "conv_1"))
    with torch.no_grad():
        first.weight[:16] = 0
        first.bias[:16] = -1
        second.weight.abs_()
        second.weight[:, :16] = -128 * second.weight_quant.scale
    apply_weight_grid(model, grid)
    opts = ExportOptions(format="tflite", target="litert-xnnpack", input_size=(16, 16))
    path = tmp_path / f"edge-{grid}.tflite"
    write(lower(model, opts), path, opts)
    return str(path)


@pytest.mark.slow  # ~1 min of emulation; the weight-grid guard itself is tested in the default suite
def test_int8_weight_minus_128_is_wrong_on_arm_without_dot_product(env, zoo_model, tmp_path):
    """The root of the Cortex-A72 divergence: XNNPACK's and ruy's int8 GEMMs without the dot
    product add pairs of int8 products into int16, and (-128)(-128) twice overflows it. TFLite's
    quantization spec keeps int8 weights on [-127, 127]; on that grid (``weight_grid:
    "narrow"``, the LiteRT targets' own) the file is exact there, and on the full grid it is not."""
    from qnas_deploy.runtimes import RUNTIMES

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    for grid, exact in (("narrow", True), ("full", False)):
        path = _edge_weight_file(zoo_model, tmp_path, grid)
        for runtime in ("litert-xnnpack", "litert-builtin"):
            host = RUNTIMES[runtime].image_runner(path)(images[0])
            a72 = aarch64.run_images(env, aarch64.CPUS["cortex-a72"], [(path, runtime)], images)[0][0]
            n1 = aarch64.run_images(env, aarch64.CPUS["neoverse-n1"], [(path, runtime)], images)[0][0]
            if runtime == "litert-xnnpack":  # the same arithmetic on every CPU, where it holds
                assert np.array_equal(n1, host)
            assert np.array_equal(a72, n1) == exact, (grid, runtime, np.mean(a72 == n1))
