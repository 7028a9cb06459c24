"""found.json: the versioned document that rebuilds an exact network (DESIGN.md section 3).

A document is checked in three steps, each failing with one line that names the place in
the document (``layers[7].op``) and what was expected:

1. it is JSON, and its ``version`` is not newer than this package reads; an older
   document is migrated to the current version first (:data:`MIGRATIONS`);
2. it matches :data:`SCHEMA` (fields, types, bit widths in {2, 4, 8, 32});
3. it describes a network of its space: the number and names of the layers, an operation
   each layer's role allows, channel counts that the operation's groups divide, widths
   only on the layers whose width the space leaves free.

Then it is parsed once into frozen dataclasses (:class:`ArchSpec`, :class:`LayerSpec`).
Example::

    {"format": "qnas-deploy/found", "version": 1, "space": "basic", "scale": 4,
     "channels": 36, "blocks": 3, "adq": true, "adq_mode": "static",
     "layers": [{"name": "head.0", "op": "simple_3x3", "w_bits": 8, "a_bits": 8, "width": 24}, ...]}

Versions: 1, the first; 2 adds a layer's ``width`` (its output channels, where the space
lets a layer choose: ``spaces.Slot.free_width``; absent means ``channels``). A version 1
document is the same network as version 2 with no widths, and is read as that.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema

from ._io import write_json
from .errors import BadInput, SpecError

FORMAT = "qnas-deploy/found"
VERSION = 2
BITS = (2, 4, 8, 32)
SCALES = (2, 3, 4)
ADQ_MODES = ("static", "dynamic")
# The image added to the network output: none (the paper), or the nearest-neighbour or
# bicubic upsampled input (an anchor in the style of mobile int8 SR nets; docs/design.md).
ANCHORS = ("none", "nearest", "bicubic")
# The integer range of 8-bit weights: "full" [-128, 127]; "narrow" [-127, 127], the int8
# weight range of TFLite's quantization spec, which ARM kernels without the dot product
# rely on (XNNPACK's and ruy's int8 GEMMs add pairs of int8 x int8 products into int16:
# 2 * 128 * 128 overflows it, 2 * 128 * 127 does not); "7bit" [-64, 63], which no uint8 x
# int8 kernel that adds pairs of products into int16 can saturate (onnxruntime's x86
# kernel without VNNI: 255 * (64 + 64) < 2^15). Absent means "full". Narrower widths are
# never at risk and keep their range. Chosen for an export target (``train --for-target``,
# ``exporters.targets``).
WEIGHT_GRIDS = ("full", "narrow", "7bit")
QUANTIZERS = {"weights": "lsq_per_channel", "activations": "hwgq", "tensors": "uint8_affine"}

_BITS_SCHEMA = {"enum": list(BITS)}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "qnas-deploy found.json",
    "type": "object",
    "required": ["format", "version", "space", "scale", "channels", "blocks", "adq", "layers"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": FORMAT},
        "version": {"type": "integer", "minimum": 1},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "space": {"enum": []},  # the space registry's names, filled in by _validator()
        "scale": {"enum": list(SCALES)},
        "channels": {"type": "integer", "minimum": 3, "maximum": 1024},
        "blocks": {"type": "integer", "minimum": 1, "maximum": 64},
        "adq": {"type": "boolean"},
        "adq_mode": {"enum": list(ADQ_MODES)},
        "fixed_bits": _BITS_SCHEMA,
        "anchor": {"enum": list(ANCHORS)},
        "weight_grid": {"enum": list(WEIGHT_GRIDS)},
        "quantizers": {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: {"const": v} for k, v in QUANTIZERS.items()},
        },
        "layers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "op", "w_bits", "a_bits"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "op": {"type": "string"},
                    "w_bits": _BITS_SCHEMA,
                    "a_bits": _BITS_SCHEMA,
                    "width": {"type": "integer", "minimum": 1, "maximum": 1024},
                },
            },
        },
        "cost": {"type": "object", "additionalProperties": {"type": "number"}},
        "search": {"type": "object"},
    },
}
_VALIDATOR: jsonschema.Draft202012Validator | None = None


def _validator() -> jsonschema.Draft202012Validator:
    """The schema's validator, its ``space`` enum taken from the space registry (which
    imports PyTorch: done on first use, not on import)."""
    global _VALIDATOR
    if _VALIDATOR is None:
        from .spaces import names

        SCHEMA["properties"]["space"]["enum"] = list(names())
        _VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
    return _VALIDATOR
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}


def _where(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _schema_message(err: jsonschema.ValidationError) -> str:
    where = _where(err.absolute_path)
    v = err.validator
    if v == "required":
        missing = [f for f in err.validator_value if f not in err.instance]
        field_path = f"{where}.{missing[0]}" if err.absolute_path else missing[0]
        return f"{field_path}: missing required field"
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return f"{where}: unknown field {extra[0]!r}" if extra else f"{where}: {err.message}"
    if v == "type":
        got = _JSON_TYPES.get(type(err.instance), type(err.instance).__name__)
        return f"{where}: expected {err.validator_value}, got {got} {json.dumps(err.instance)}"
    if v == "enum":
        return (f"{where}: {json.dumps(err.instance)} is not allowed "
                f"(choose from {', '.join(json.dumps(e) for e in err.validator_value)})")
    if v == "const":
        return f"{where}: expected {json.dumps(err.validator_value)}, got {json.dumps(err.instance)}"
    return f"{where}: {err.message}"


def _v1_to_v2(doc: dict) -> dict:
    """Version 1 had no widths: the same network, every layer at ``channels``."""
    for i, layer in enumerate(doc.get("layers") or []):
        if isinstance(layer, dict) and "width" in layer:
            raise SpecError(f"layers[{i}].width: widths need format version 2 (the document says 1)")
    return {**doc, "version": 2}


# version -> the step that makes a document of that version one of the next.
MIGRATIONS = {1: _v1_to_v2}


def migrate(doc: Any) -> Any:
    """``doc`` at the current format version (a new dict; ``doc`` is not changed). Documents
    that are not objects or have no usable version are returned as they are, for the
    schema to name what is wrong."""
    if not isinstance(doc, dict):
        return doc
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return doc
    if version > VERSION:
        raise SpecError(f"version: format version {version} is newer than this qnas-deploy "
                        f"reads ({VERSION}); upgrade qnas-deploy")
    while version in MIGRATIONS:
        doc = MIGRATIONS[version](doc)
        version = doc["version"]
    return doc


def validate_document(doc: Any) -> dict:
    """Check a parsed found.json (any version this package reads); return it migrated to the
    current version, or raise :class:`SpecError` with one line naming the problem."""
    if not isinstance(doc, dict):
        got = _JSON_TYPES.get(type(doc), type(doc).__name__)
        raise SpecError(f"(document): expected a JSON object, got {got}")
    doc = migrate(doc)
    errors = sorted(_validator().iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        # The shallowest error first: a missing top-level field explains more than its consequences.
        err = min(errors, key=lambda e: len(e.absolute_path))
        raise SpecError(_schema_message(err))
    _validate_network(doc)
    return doc


def _validate_network(doc: dict) -> None:
    from .ops import get_op
    from .spaces import get_space

    space = get_space(doc["space"])
    channels, blocks, scale = doc["channels"], doc["blocks"], doc["scale"]
    why = space.check(channels, blocks, scale)
    if why:
        raise SpecError(why)
    if doc["adq"] and not space.has_adq:
        raise SpecError(f"adq: the {space.name} space has no residual blocks for ADQ; set adq to false")
    anchor = doc.get("anchor", "none")
    if anchor not in space.anchors:
        raise SpecError(f"anchor: the {space.name} space takes {', '.join(map(repr, space.anchors))}, "
                        f"not {anchor!r}")
    layers = doc["layers"]
    widths = {l["name"]: l["width"] for l in layers if "width" in l}
    slots = space.slots(channels, blocks, scale, widths)
    if len(layers) != len(slots):
        raise SpecError(f"layers: the {space.name} space with blocks={blocks} has {len(slots)} "
                        f"searchable layers, got {len(layers)}")
    for i, (slot, layer) in enumerate(zip(slots, layers)):
        if layer["name"] != slot.name:
            raise SpecError(f"layers[{i}].name: expected {slot.name!r} (layers are listed in "
                            f"network order), got {layer['name']!r}")
        if "width" in layer:
            if not slot.free_width:
                raise SpecError(f"layers[{i}].width: the {space.name} space fixes the width of {slot.name} "
                                f"(its output meets other layers'); remove the field"
                                if space.width_choices else
                                f"layers[{i}].width: the {space.name} space has no layer widths; remove the field")
            why = space.check_width(layer["width"]) if space.check_width else None
            if why:
                raise SpecError(f"layers[{i}].width: {why}")
        allowed = space.ops_for(slot.role)
        if layer["op"] not in allowed:
            raise SpecError(f"layers[{i}].op: {layer['op']!r} is not an operation of the {space.name} "
                            f"space's {slot.role} layers (choose from {', '.join(allowed)})")
        why = get_op(layer["op"]).check(slot.c_in, slot.c_out, slot.c_mid)
        if why:
            raise SpecError(f"layers[{i}].op: {why}")


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer: its name, operation, bit widths (32 = float) and, where the
    space leaves it free, its output width (None: the spec's ``channels``)."""

    name: str
    op: str
    w_bits: int
    a_bits: int
    width: int | None = None


@dataclass(frozen=True)
class ArchSpec:
    """A validated architecture. Construct with :func:`from_dict` / :func:`load`, or directly
    (the constructor validates the same way)."""

    space: str
    scale: int
    channels: int
    blocks: int
    layers: tuple[LayerSpec, ...]
    adq: bool = True
    adq_mode: str = "static"
    fixed_bits: int = 8
    anchor: str = "none"
    weight_grid: str = "full"
    name: str | None = None
    description: str | None = None
    cost: dict[str, float] | None = field(default=None, compare=False)
    search: dict[str, Any] | None = field(default=None, compare=False)
    version: int = VERSION

    def __post_init__(self):
        # A width equal to ``channels`` is the default: stored as None, so that equal networks
        # compare and serialise equal.
        object.__setattr__(self, "layers", tuple(
            replace(l, width=None) if l.width == self.channels else l
            for l in (l if isinstance(l, LayerSpec) else LayerSpec(**l) for l in self.layers)))
        object.__setattr__(self, "version", validate_document(self.to_dict())["version"])

    @property
    def float_only(self) -> bool:
        return all(l.w_bits == l.a_bits == 32 for l in self.layers)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": FORMAT, "version": self.version}
        if self.name is not None:
            d["name"] = self.name
        if self.description is not None:
            d["description"] = self.description
        d.update(space=self.space, scale=self.scale, channels=self.channels, blocks=self.blocks,
                 adq=self.adq, adq_mode=self.adq_mode, fixed_bits=self.fixed_bits, anchor=self.anchor,
                 quantizers=dict(QUANTIZERS),
                 layers=[{k: v for k, v in asdict(l).items() if v is not None} for l in self.layers])
        if self.weight_grid != "full":  # absent: documents without it read as before
            d["weight_grid"] = self.weight_grid
        if self.cost is not None:
            d["cost"] = dict(self.cost)
        if self.search is not None:
            d["search"] = self.search
        return d

    def with_(self, **changes) -> "ArchSpec":
        return replace(self, **changes)


def from_dict(doc: Any) -> ArchSpec:
    doc = validate_document(doc)
    keys = ("space", "scale", "channels", "blocks", "adq", "adq_mode", "fixed_bits", "anchor", "weight_grid", "name",
            "description", "cost", "search", "version")
    kwargs = {k: doc[k] for k in keys if k in doc}
    return ArchSpec(layers=tuple(LayerSpec(**l) for l in doc["layers"]), **kwargs)


def loads(text: str, source: str = "found.json") -> ArchSpec:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{source}: not JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    try:
        return from_dict(doc)
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None


def load(path: str | Path) -> ArchSpec:
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{p}: cannot read ({e})") from None
    return loads(text, str(p))


def upgrade(path: str | Path, out: str | Path | None = None) -> tuple[int, int]:
    """Rewrite the found.json at ``path`` (or into ``out``) at the current format version;
    returns ``(old version, new version)``. Nothing is written if the document is invalid."""
    spec = load(path)
    old = json.loads(Path(path).read_text(encoding="utf-8"))["version"]  # valid: load read it
    save(spec, out or path)
    return old, spec.version


def save(spec: ArchSpec, path: str | Path) -> None:
    write_json(path, spec.to_dict())


def uniform(space: str, op_by_role: dict[str, str] | str, w_bits: int, a_bits: int | None = None,
            scale: int = 4, channels: int | None = None, blocks: int | None = None, **kw) -> ArchSpec:
    """A spec with one operation per role (or one for all) and uniform bits; handy in code and tests."""
    from .spaces import get_space

    sp = get_space(space)
    channels = channels or sp.default_channels
    blocks = blocks or sp.default_blocks
    a_bits = w_bits if a_bits is None else a_bits
    layers = tuple(
        LayerSpec(s.name, op_by_role if isinstance(op_by_role, str) else op_by_role[s.role], w_bits, a_bits)
        for s in sp.layout(channels, blocks, scale))
    return ArchSpec(space=space, scale=scale, channels=channels, blocks=blocks, layers=layers, **kw)
