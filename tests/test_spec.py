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
    ("newer version", lambda d: _set(d, ["version"], 2),
     "version: format version 2 is newer than this qnas-deploy reads (1); upgrade qnas-deploy"),
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
