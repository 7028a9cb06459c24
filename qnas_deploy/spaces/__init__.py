"""Search spaces: the layout of searchable layers, their operation sets, and the models.

A space is described once, as data (:class:`Space`): the ordered list of searchable
layer slots for given channels/blocks/scale, the operations each role may take, and a
builder for the fixed network a spec describes. The spec validator, the cost model, the
search supernet and the exporters all read the same description.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class Slot:
    """A searchable layer: its name in found.json, its role, and its channel counts.

    ``free_width``: the layer's output width is its own choice (found.json's ``width``;
    ``c_out`` and ``c_mid`` are that width and the next layer reads it), because nothing
    but the next searchable layer consumes it: no residual, no fixed op, no graph output.
    """

    name: str
    role: str
    c_in: int
    c_out: int
    c_mid: int
    free_width: bool = False


@dataclass(frozen=True)
class Space:
    """A search space.

    Attributes:
        name: the key used in found.json (``space``).
        default_channels, default_blocks: the paper's settings.
        op_sets: per role, named operation sets (``small``: appendix J-C, used for
            quantized search; ``big``: appendix J-B, full precision).
        layout: ``(channels, blocks, scale, widths=None) -> [Slot]`` in network order;
            ``widths`` maps layer names to the output widths found.json gives them.
        check: ``(channels, blocks, scale) -> reason or None`` for space-wide constraints.
        width_choices: the channel widths a sampling search offers each ``free_width``
            layer (empty: the space has none; its widths are fixed by ``channels``).
        check_width: ``width -> reason or None``: what a free layer's width must satisfy
            beyond what its operation needs (the mobile space's SIMD multiple).
        build: ``spec -> nn.Module``.
        lower: ``(model, builder, input tensor, adq override) -> output tensor``: the
            network's integer graph, written with ``exporters.builder.GraphBuilder``
            beside the ``forward`` it mirrors.
        fixed_bits: bit width of the layers that are not searchable (RFDN's ESA, 1x1 fusions).
        has_adq: whether the space has residual blocks that ADQ can wrap.
        anchors: the ``anchor`` values of found.json the space builds.
    """

    name: str
    default_channels: int
    default_blocks: int
    op_sets: dict[str, dict[str, tuple[str, ...]]]
    layout: Callable[..., list[Slot]]
    check: Callable[[int, int, int], str | None]
    build: Callable[..., nn.Module] = field(repr=False)
    lower: Callable | None = field(default=None, repr=False)
    fixed_bits: int = 8
    has_adq: bool = True
    anchors: tuple[str, ...] = ("none",)
    width_choices: tuple[int, ...] = ()
    check_width: Callable[[int], str | None] | None = field(default=None, repr=False)

    def slots(self, channels: int, blocks: int, scale: int, widths: dict[str, int] | None = None) -> list[Slot]:
        """The layout with the given free layers' widths (a space without any takes none)."""
        if not self.width_choices:
            return self.layout(channels, blocks, scale)
        return self.layout(channels, blocks, scale, widths or {})

    def slots_of(self, spec) -> list[Slot]:
        """The layout of a spec, its layers' ``width`` fields applied."""
        return self.slots(spec.channels, spec.blocks, spec.scale, spec_widths(spec))

    def width_problem(self, widths, channels: int | None = None, blocks: int | None = None,
                      op_set: str = "small") -> str | None:
        """Why ``widths`` cannot be offered to every free layer with every operation of
        ``op_set`` (the layer's and its reader's), or None."""
        from ..ops import get_op

        if widths and not self.width_choices:
            return f"the {self.name} space has no layer widths"
        channels, blocks = channels or self.default_channels, blocks or self.default_blocks
        free = [s.name for s in self.layout(channels, blocks, 4) if s.free_width] if widths else []
        for w in widths:
            why = self.check_width(w) if self.check_width else None
            if why:
                return why
            # Every free layer at ``w``: each free layer and each reader meets ``w`` on one side.
            for s in self.slots(channels, blocks, 4, dict.fromkeys(free, w)):
                for op in self.ops_for(s.role, op_set):
                    why = get_op(op).check(s.c_in, s.c_out, s.c_mid)
                    if why:
                        return f"width {w}: {s.name}: {why}"
        return None

    def ops_for(self, role: str, op_set: str | None = None) -> tuple[str, ...]:
        """Operations a layer of ``role`` may take (the union of all sets when ``op_set`` is None)."""
        sets = self.op_sets[role]
        if op_set is not None:
            return sets[op_set]
        seen: dict[str, None] = {}
        for names in sets.values():
            seen.update(dict.fromkeys(names))
        return tuple(seen)


SPACES: dict[str, Space] = {}


def spec_widths(spec) -> dict[str, int]:
    """``layer name -> width`` of the layers whose width a spec sets."""
    return {l.name: l.width for l in spec.layers if l.width is not None}


def register_space(space: Space) -> Space:
    if space.name in SPACES:
        raise ValueError(f"space {space.name!r} is registered twice")
    SPACES[space.name] = space
    return space


def names() -> tuple[str, ...]:
    """The registered spaces, in registration order (found.json's ``space`` enum, ``--space``)."""
    return tuple(SPACES)


def get_space(name: str) -> Space:
    try:
        return SPACES[name]
    except KeyError:
        raise KeyError(f"unknown search space {name!r} (choose from {', '.join(sorted(SPACES))})") from None


def build_layers(spec, slots: list[Slot]) -> nn.ModuleDict:
    """The searchable layers of ``spec`` as quantized operations, keyed ``head_0``, ``body_1_skip``..."""
    from ..ops import QOp

    return nn.ModuleDict({
        slot.name.replace(".", "_"): QOp(layer.op, slot.c_in, slot.c_out, slot.c_mid, layer.w_bits, layer.a_bits)
        for slot, layer in zip(slots, spec.layers)})


class SpaceNet(nn.Module):
    """What every space's fixed network starts with: its spec, scale, tensor bits and
    searchable layers (``layers``, keyed as :func:`build_layers` keys them)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.scale = spec.scale
        self.tbits = tensor_bits(spec)
        self.layers = build_layers(spec, get_space(spec.space).slots_of(spec))


def shuffle_up(net, y):
    """The upsample layer, its tensor quantizer, then PixelShuffle (quantizing before or
    after it is the same: it only moves values)."""
    from ..ops import chain

    return net.shuffle(net.q_up(chain([net.layers["upsample"]], y, out=net.q_up)))


def to_image(net, out):
    """The network's output on the 1/255 image grid (as it is, in an all-float network)."""
    return net.q_image(out) if net.q_image.enabled else out


def lower_shuffle_up(net, g, y: str) -> str:
    """:func:`shuffle_up` as an integer graph."""
    u = g.chain(list(net.layers["upsample"]), y, g.held("upsample", 3 * net.scale ** 2, net.q_up), "upsample")
    return g.depth_to_space(u, "shuffle", net.scale)


def lower_tail(net, g, up: str, convs) -> str:
    """``up + tail(up)`` onto the output image grid, as an integer graph."""
    t = g.chain(list(convs), up, g.held("tail", 3, net.q_tail), "tail")
    return g.add(up, t, g.held("sr", 3, net.q_image))


def tensor_bits(spec) -> int:
    """Bits of the tensors between layers: 8, or 32 (no quantizer) in an all-float network."""
    return 32 if spec.float_only else 8


def build_model(spec) -> nn.Module:
    """The fixed quantized network a validated :class:`~qnas_deploy.spec.ArchSpec` describes."""
    from ..quant.modules import apply_weight_grid

    return apply_weight_grid(get_space(spec.space).build(spec), spec.weight_grid)


# Spaces register themselves on import; listed explicitly (no file scanning).
from . import basic, rfdn, espcn, mobile  # noqa: E402,F401 - in the order users read them
