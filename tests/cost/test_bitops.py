"""The BitOps/MACs cost model against hand-computed MACs/BitOps, and the zoo's stored figures."""
import json

import pytest

from qnas_deploy import cost, spec as S, zoo
from qnas_deploy.cli import main


def _espcn(channels, ops, bits):
    return S.ArchSpec(space="espcn", scale=4, channels=channels, blocks=1, adq=False, layers=tuple(
        S.LayerSpec(n, o, *b) for n, o, b in zip(("conv.0", "conv.1", "upsample"), ops, bits)))


def test_hand_computed_small_spec():
    arch = _espcn(96, ("simple_5x5", "simple_3x3", "simple_3x3_grouped_3"), [(8, 4), (4, 2), (32, 32)])
    rep = cost.layer_costs(arch, (32, 32))
    hw = 32 * 32
    macs = [96 * 3 * 25 * hw,       # 3 -> 96, 5x5:            7,372,800
            48 * 96 * 9 * hw,       # 96 -> 48, 3x3:           42,467,328
            48 * (48 // 3) * 9 * hw]  # 48 -> 48, 3x3, 3 groups: 7,077,888
    assert [l.macs for l in rep.layers] == macs == [7_372_800, 42_467_328, 7_077_888]
    assert [l.bitops for l in rep.layers] == [7_372_800 * 32, 42_467_328 * 8, 7_077_888 * 1024]
    assert rep.macs == sum(macs) and rep.flops == 2 * sum(macs)
    assert rep.bitops == 7_372_800 * 32 + 42_467_328 * 8 + 7_077_888 * 1024


def test_costs_scale_with_the_input_size():
    arch = _espcn(64, ("simple_5x5", "simple_3x3", "simple_3x3"), [(8, 8)] * 3)
    assert cost.layer_costs(arch, (64, 48)).macs == cost.layer_costs(arch, (32, 32)).macs * 3


@pytest.mark.parametrize("op,convs", [
    ("conv_3x1_1x3", [36 * 36 * 3, 36 * 36 * 3]),
    ("decenc_3x3_2", [18 * 36 * 9, 18 * 18 * 9, 36 * 18 * 9]),
    ("growth2_3x3", [72 * 36 * 9, 36 * 72 * 9]),
    ("simple_3x3_grouped_3", [36 * 12 * 9]),
])
def test_multi_conv_operations(op, convs):
    arch = S.uniform("basic", {"head": "simple_3x3", "body": "simple_3x3", "skip": "simple_1x1",
                               "upsample": "simple_3x3", "tail": "simple_3x3"}, 8)
    layers = tuple(S.LayerSpec(l.name, op, 4, 8) if l.name == "body.1.0" and op in
                   ("conv_3x1_1x3", "decenc_3x3_2", "simple_3x3_grouped_3") or (l.name == "upsample" and op == "growth2_3x3")
                   else l for l in arch.layers)
    arch = arch.with_(layers=layers)
    target = "upsample" if op == "growth2_3x3" else "body.1.0"
    row = next(l for l in cost.layer_costs(arch, (16, 16)).layers if l.name == target)
    if op == "growth2_3x3":
        convs = [72 * 36 * 9, 48 * 72 * 9]  # the upsample layer ends at 3 * 4^2 channels
    assert row.macs == sum(convs) * 16 * 16
    assert row.bitops == row.macs * 4 * 8


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_cost_figures_are_current(name):
    arch = zoo.load_zoo(name)
    assert arch.cost == cost.summary(arch)


def test_rfdn_counts_its_fixed_layers():
    rep = cost.layer_costs(zoo.load_zoo("rfdn_mixed"))
    fixed = {l.name for l in rep.layers if not l.searchable}
    assert {"blocks.0.esa", "blocks.0.fuse", "fuse", "lr_conv"} <= fixed
    assert all(l.w_bits == 8 for l in rep.layers if not l.searchable)


@pytest.mark.parametrize("name", zoo.names())
def test_info_json_to_stdout(name, capsys):
    assert main(["info", name, "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["macs"] > 0 and data["bitops"] > 0 and data["size"] == [32, 32]
    assert data["bitops"] == zoo.load_zoo(name).cost["bitops_32x32"]
    assert abs(sum(l["bitops_share"] for l in data["layers"]) - 1) < 1e-9


def test_info_table_and_json_file(tmp_path, capsys):
    out = tmp_path / "info.json"
    assert main(["info", "basic_mixed", "--size", "64x48", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "body.2.skip" in table and "total at 64x48" in table
    assert json.loads(out.read_text())["size"] == [64, 48]
    assert [p.name for p in tmp_path.iterdir()] == ["info.json"]  # no temporary file left


def test_bad_size_exits_2(capsys):
    assert main(["info", "basic_mixed", "--size", "big"]) == 2
    assert "expected HxW" in capsys.readouterr().err


def test_unwritable_json_path_exits_2(tmp_path, capsys):
    assert main(["info", "basic_mixed", "--json", str(tmp_path / "missing" / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
