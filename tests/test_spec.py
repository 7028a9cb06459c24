"""found.json: round trips, the zoo, and one clear line (exit 2) for every malformed case."""
import copy
import json

import pytest

from qnas_deploy import spec as S
from qnas_deploy import zoo
from qnas_deploy.cli import main
from qnas_deploy.errors import SpecError
from qnas_deploy.spaces import names as space_names


@pytest.fixture
def doc():
    return zoo.load_zoo("basic_mixed").to_dict()


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_entries_round_trip(name, tmp_path):
    arch = zoo.load_zoo(name)
    path = tmp_path / "found.json"
    S.save(arch, path)
    again = S.load(path)
    assert again == arch
    assert again.to_dict() == arch.to_dict()
    assert json.loads(path.read_text()) == arch.to_dict()


def test_zoo_names_cover_the_issue():
    names = set(zoo.names())
    assert {"basic_mixed", "basic_w8a8", "basic_w4a4", "rfdn_mixed", "espcn_w8a8"} <= names
    mixed = zoo.load_zoo("basic_mixed")
    bits = {l.name: l.w_bits for l in mixed.layers}
    assert bits["head.0"] == 8 and bits["tail.1"] == 8 and bits["body.1.1"] == 4


def test_constructor_validates_like_the_loader():
    arch = zoo.load_zoo("basic_w8a8")
    with pytest.raises(SpecError, match=r"layers\[2\].op"):
        arch.with_(layers=tuple(l if i != 2 else S.LayerSpec(l.name, "growth1_3x3", 8, 8)
                                for i, l in enumerate(arch.layers)))


def _set(d, path, value):
    d = copy.deepcopy(d)
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()

# (case, how to break the document, what the one line must say)
BAD = [
    ("unknown op", lambda d: _set(d, ["layers", 3, "op"], "simple_9x9"),
     "layers[3].op: 'simple_9x9' is not an operation of the basic space's body layers (choose from"),
    ("op of another role", lambda d: _set(d, ["layers", 4, "op"], "conv_3x1_1x3"),
     "layers[4].op: 'conv_3x1_1x3' is not an operation of the basic space's skip layers"),
    ("bit width 3", lambda d: _set(d, ["layers", 7, "w_bits"], 3),
     "layers[7].w_bits: 3 is not allowed (choose from 2, 4, 8, 32)"),
    ("wrong layer count", lambda d: _set(d, ["layers"], d["layers"][:-1]),
     "layers: the basic space with blocks=3 has 14 searchable layers, got 13"),
    ("blocks disagree with layers", lambda d: _set(d, ["blocks"], 4),
     "layers: the basic space with blocks=4 has 17 searchable layers, got 14"),
    ("layer out of order", lambda d: _set(d, ["layers", 0, "name"], "head.1"),
     "layers[0].name: expected 'head.0'"),
    ("groups do not divide channels", lambda d: _set(_set(d, ["channels"], 35), ["layers", 1, "op"], "simple_3x3_grouped_3"),
     "layers[1].op: simple_3x3_grouped_3 needs channels divisible by its 3 groups, got 35 -> 35"),
    ("missing field", lambda d: _set(d, ["scale"], _DELETE), "scale: missing required field"),
    ("missing layer field", lambda d: _set(d, ["layers", 2, "a_bits"], _DELETE), "layers[2].a_bits: missing required field"),
    ("wrong type", lambda d: _set(d, ["channels"], "36"), 'channels: expected integer, got string "36"'),
    ("wrong type of layers", lambda d: _set(d, ["layers"], {}), "layers: expected array, got object"),
    ("newer version", lambda d: _set(d, ["version"], 3),
     "version: format version 3 is newer than this qnas-deploy reads (2); upgrade qnas-deploy"),
    ("width of a residual layer", lambda d: _set(d, ["layers", 3, "width"], 24),
     "layers[3].width: the basic space fixes the width of body.0.1 (its output meets other layers'); remove the field"),
    ("width in a version 1 document", lambda d: _set(_set(d, ["version"], 1), ["layers", 0, "width"], 24),
     "layers[0].width: widths need format version 2 (the document says 1)"),
    ("width that groups do not divide", lambda d: _set(_set(d, ["layers", 0, "width"], 25), ["layers", 0, "op"],
                                                       "simple_3x3_grouped_3"),
     "layers[0].op: simple_3x3_grouped_3 needs channels divisible by its 3 groups, got 3 -> 25"),
    ("zero width", lambda d: _set(d, ["layers", 0, "width"], 0), "layers[0].width: 0 is less than the minimum of 1"),
    ("mobile width off the SIMD rows", lambda d: _set(zoo.load_zoo("mobile_w8a8").to_dict(), ["layers", 1, "width"], 20),
     "layers[1].width: the mobile space keeps widths a multiple of 8, got 20"),
    ("width on espcn", lambda d: _set(zoo.load_zoo("espcn_w8a8").to_dict(), ["layers", 0, "width"], 32),
     "layers[0].width: the espcn space has no layer widths; remove the field"),
    ("unknown space", lambda d: _set(d, ["space"], "edsr"), 'space: "edsr" is not allowed (choose from ' + ", ".join(f'"{n}"' for n in space_names()) + ")"),
    ("unknown field", lambda d: _set(d, ["colour"], "red"), "(document): unknown field 'colour'"),
    ("wrong format", lambda d: _set(d, ["format"], "darts"), 'format: expected "qnas-deploy/found", got "darts"'),
    ("rfdn channels", lambda d: {**zoo.load_zoo("rfdn_mixed").to_dict(), "channels": 50},
     "channels: the rfdn space needs channels divisible by 12"),
    ("adq on espcn", lambda d: {**zoo.load_zoo("espcn_w8a8").to_dict(), "adq": True},
     "adq: the espcn space has no residual blocks for ADQ; set adq to false"),
    ("anchor on rfdn", lambda d: {**zoo.load_zoo("rfdn_mixed").to_dict(), "anchor": "nearest"},
     "anchor: the rfdn space takes 'none', not 'nearest'"),
    ("unknown anchor", lambda d: _set(d, ["anchor"], "lanczos"), 'anchor: "lanczos" is not allowed'),
]


@pytest.mark.parametrize("case,breaker,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_found_json_exits_2_with_one_line(case, breaker, message, doc, tmp_path, capsys):
    path = tmp_path / "found.json"
    path.write_text(json.dumps(breaker(doc)))
    assert main(["info", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}: ")
    assert message in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("text,message", [
    ("{not json", "not JSON (line 1 column 2"),
    ("[1, 2]", "(document): expected a JSON object, got array"),
    ("", "not JSON"),
])
def test_not_json_exits_2(text, message, tmp_path, capsys):
    path = tmp_path / "found.json"
    path.write_text(text)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_missing_file_names_it(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.json: no such file, and not a zoo entry" in err


def test_debug_shows_the_traceback(doc, tmp_path):
    path = tmp_path / "found.json"
    path.write_text(json.dumps(_set(doc, ["layers", 7, "w_bits"], 3)))
    with pytest.raises(SpecError):
        main(["--debug", "info", str(path)])


def test_version_1_documents_read_as_the_same_network(doc, tmp_path):
    v1 = _set(doc, ["version"], 1)
    arch = S.from_dict(v1)
    assert arch.version == S.VERSION == 2
    assert arch == S.from_dict(doc)
    assert S.migrate(v1) == {**v1, "version": 2} and v1["version"] == 1  # a copy, not changed in place


def test_upgrade_rewrites_a_version_1_file(doc, tmp_path, capsys):
    path = tmp_path / "found.json"
    path.write_text(json.dumps(_set(doc, ["version"], 1)))
    assert main(["upgrade", str(path)]) == 0
    assert json.loads(path.read_text())["version"] == 2
    assert "version 1 -> 2" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_set(_set(doc, ["version"], 1), ["layers", 7, "w_bits"], 3)))
    before = bad.read_text()
    assert main(["upgrade", str(bad)]) == 2
    assert bad.read_text() == before  # nothing half-written


@pytest.mark.parametrize("space,name,width", [("basic", "body.1.0", 48), ("basic_lrtail", "tail.0", 24),
                                              ("mobile", "body.2", 16), ("mobile", "head.0", 48)])
def test_a_free_width_changes_that_layer_and_its_reader_only(space, name, width, tmp_path):
    from qnas_deploy.spaces import get_space

    base = S.uniform(space, "simple_3x3", 8, blocks=3, adq=space != "mobile")
    layers = tuple(S.LayerSpec(l.name, l.op, 8, 8, width if l.name == name else None) for l in base.layers)
    arch = base.with_(layers=layers)
    S.save(arch, tmp_path / "w.json")
    again = S.load(tmp_path / "w.json")
    assert again == arch and again.version == 2
    written = json.loads((tmp_path / "w.json").read_text())["layers"]
    assert [l.get("width") for l in written] == [width if l["name"] == name else None for l in written]
    slots = get_space(space).slots_of(arch)
    default = get_space(space).slots_of(base)
    changed = [(a.name, a.c_in, a.c_out) for a, b in zip(slots, default) if a != b]
    i = [s.name for s in slots].index(name)
    assert changed[0] == (name, default[i].c_in, width)
    assert changed[1] == (slots[i + 1].name, width, default[i + 1].c_out)
    assert len(changed) == 2


def test_a_width_equal_to_channels_is_the_default():
    base = S.uniform("mobile", "simple_3x3", 8, adq=False)
    same = base.with_(layers=tuple(S.LayerSpec(l.name, l.op, 8, 8, 32 if l.name == "body.0" else None)
                                   for l in base.layers))
    assert same == base and "width" not in json.dumps(same.to_dict())
