"""The typed IR: one operation registry, frozen attributes, dispatch tables checked at import."""
import dataclasses

import numpy as np
import pytest

from qnas_deploy.errors import BadInput
from qnas_deploy.exporters import ir, onnx, reference, tflite


def test_every_operation_has_frozen_keyword_attributes():
    assert set(ir.OPS) == {"conv", "float_conv", "requant", "add", "mul", "concat", "depth_to_space", "tile",
                           "max_pool", "crop", "sigmoid", "adq_scale", "pad", "reinterpret"}
    for name, cls in ir.OPS.items():
        assert cls.op == name and dataclasses.is_dataclass(cls)
    a = ir.Add(mult=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.mult = 1.0
    assert a.replace(mult=1.0).mult == 1.0 and a.mult == 2.0
    with pytest.raises(TypeError):
        ir.DepthToSpace(2)  # keyword-only: no silent argument order
    with pytest.raises(ValueError, match="CRD or DCR"):
        ir.DepthToSpace(blocksize=2, mode="XYZ")


def test_node_checks_its_attributes():
    with pytest.raises(TypeError, match="takes Add attributes"):
        ir.Node("add", ["a", "b"], "c", ir.Mul())
    with pytest.raises(ir.UnsupportedOp, match="unknown IR operation 'swish'"):
        ir.Node("swish", ["a"], "b", ir.Requant())
    assert issubclass(ir.UnsupportedOp, BadInput)  # one line, exit 2


def test_dispatch_tables_cover_the_registry():
    for table in reference.ARITHMETIC.values():
        assert set(table) == set(ir.OPS)
    assert set(onnx._OPS) | {"reinterpret"} == set(ir.OPS)
    assert set(tflite._OPS) | {"tile", "adq_scale"} == set(ir.OPS)
    with pytest.raises(RuntimeError, match="missing \\['tile'\\]"):
        ir.check_dispatch({k: None for k in ir.OPS if k != "tile"}, "a table")


def test_serializers_refuse_what_their_targets_lower():
    s = float(np.float32(1 / 255))
    t = {"image": ir.Tensor("image", 3, s), "rep": ir.Tensor("rep", 6, s)}
    g = ir.Graph(t, [ir.Node("tile", ["image"], "rep", ir.Tile(times=2))], "image", "rep", 1)
    with pytest.raises(ir.UnsupportedOp, match="the TFLite serializer cannot take operation 'tile'"):
        tflite.to_tflite(g)
    g = ir.Graph({**t, "q": ir.Tensor("q", 3, 0.02)}, [ir.Node("requant", ["image"], "q", ir.Requant())],
                 "image", "q", 1)
    with pytest.raises(ir.UnsupportedOp, match="requant_as_conv"):
        onnx.to_onnx(g)
