"""The target table: every target's passes give its serializer what it requires, on every
zoo network, and change no value (0 steps in the exact arithmetic)."""
import numpy as np
import pytest
import torch

from qnas_deploy.exporters import reference, targets
from qnas_deploy.exporters.builder import lower_model
from qnas_deploy.exporters.options import FORMATS, ONLY_TARGETS, SERIALIZER, ExportOptions
from qnas_deploy.runtimes import RUNTIMES
from qnas_deploy.zoo import names


def test_table_is_consistent():
    assert set(targets.DEFAULT.values()) <= set(targets.TARGETS)
    for t in targets.TARGETS.values():
        assert t.format in targets.SERIALIZER_REQUIRES and t.arithmetic in reference.ARITHMETIC
    # one file serves LiteRT with and without XNNPACK: the two targets lower it alike
    assert targets.get("litert-xnnpack").passes == targets.get("litert-builtin").passes
    # a runtime's files are written by its target's serializer (an .ort file is an ONNX file
    # converted), and that format may be exported for that target
    for rt in RUNTIMES.values():
        fmt = rt.suffix.lstrip(".")
        assert fmt in FORMATS and targets.get(rt.target).format == SERIALIZER[fmt]
        assert rt.target in ONLY_TARGETS.get(fmt, (rt.target,))


@pytest.fixture(scope="module")
def canonical(zoo_model):
    return {n: lower_model(zoo_model(n)) for n in names()}


@pytest.mark.parametrize("name", names())
@pytest.mark.parametrize("target,int4", [("onnxruntime", "container"),
                                         ("litert-xnnpack", "container"), ("litert-builtin", "packed")])
def test_targets_lower_every_zoo_graph(canonical, name, target, int4):
    t = targets.get(target)
    g = canonical[name]
    lowered = t.lower(g, ExportOptions(format=t.format, target=target, int4=int4))
    for prop in targets.SERIALIZER_REQUIRES[t.format]:
        assert prop.violations(lowered) == [], prop.text
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(1, 3, 17, 19, generator=gen) * 255).round().to(torch.uint8).numpy()
    # 0 steps. One pass can in principle move a value: mult_as_view (LiteRT) multiplies
    # ESA's static ADQ factor into a scale, a float32 product in another order, which
    # matters only within a float32 bit of a rounding tie (none on this seeded input).
    assert np.array_equal(reference.run(g, x), reference.run(lowered, x))


def test_unknown_target_is_one_line():
    from qnas_deploy.errors import BadInput

    with pytest.raises(BadInput, match="--target mobile-npu: not a target"):
        ExportOptions(target="mobile-npu")
    with pytest.raises(BadInput, match="writes tflite files, not onnx"):
        ExportOptions(format="onnx", target="litert-builtin")
