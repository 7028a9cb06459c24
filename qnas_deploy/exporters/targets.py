"""Targets: a name, the file format, an ordered pass list and the arithmetic it runs in.

One table (:data:`TARGETS`). Exporting for a target lowers the canonical graph through
its passes and hands the result to the format's serializer, which maps each IR operation
one to one; the numpy reference runs the same target-lowered graph in the target's
arithmetic (``reference.ARITHMETIC``), so a runtime is checked against what its file
actually holds. ``docs/design.md`` ("How to add a target") says how to add one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph
from .passes import Pass, Property, run_passes
from .passes import concat_on_grid, conv_add_copy, crd_to_dcr, dense, mult_as_view, pack_int4, pair_safe, \
    pointwise_exact, requant_as_conv
from .passes import tile_as_conv
from .passes import u8s8_weights, widen


@dataclass(frozen=True)
class Target:
    name: str
    format: str                    # the serializer: "onnx" or "tflite"
    passes: tuple[Pass, ...]
    arithmetic: str                # reference.ARITHMETIC key the runtime computes in (on x86)
    description: str
    # Where the runtime's kernels compute otherwise on another CPU architecture: the
    # arithmetic there (``platform.machine()`` names: "aarch64").
    machines: dict[str, str] = field(default_factory=dict)
    # The 8-bit weight grid its fast int8 kernels need (``spec.WEIGHT_GRIDS``; ``train
    # --for-target``): a model trained on another still exports exactly, through whatever
    # slower form the passes choose (``u8s8_weights``).
    weight_grid: str = "full"

    def arithmetic_on(self, machine: str | None) -> str:
        """The arithmetic this target's runtime computes in on ``machine`` (None: this one)."""
        return self.machines.get(machine or "x86_64", self.arithmetic)

    def lower(self, graph: Graph, options) -> Graph:
        """``graph`` (canonical, from ``builder.lower_model``) as this target's serializer takes it."""
        return run_passes(graph, self.passes, options)


ONNX = (pack_int4.PASS, requant_as_conv.PASS, u8s8_weights.PASS)
# OpenVINO's file differs from onnxruntime's in four rewrites, each against one of its CPU
# plugin's departures from the graph: every concat input requantised onto the concat's grid
# first (its low-precision transformations otherwise align the writing convs' output
# intervals to the concat's, which trained RFDN's four-grid concat rounds otherwise than the
# arithmetic model on up to 30% of output pixels); a copy between each conv and its add (its conv + sum
# fusion drops a rounding; 15% slower in onnxruntime, so the default file goes without);
# a grouped conv that feeds a depth-to-space as a dense block-diagonal one (its AMX grouped
# int8 kernel is wrong for ESA's upsampling conv when the output is under 12 pixels a side); and int8 weights as stored
# (it runs uint8-stored weights as float32 convs, whose sums round). Its int8 convs add
# pairs of products into int16 with saturation on CPUs without VNNI (AVX2 only), so a conv
# whose adjacent input channels could overflow reads its input twice, each weight paired
# with a zero (pair_safe; exact on every x86 CPU, twice that conv's work). Last, each
# depthwise 1x1 conv re-represented where OpenVINO's two or three roundings of its
# requantisation would miss the exact table (pointwise_exact, in OpenVINO's arithmetic).
OPENVINO = (pack_int4.PASS, concat_on_grid.PASS, requant_as_conv.PASS, dense.PASS, pair_safe.PASS, conv_add_copy.PASS,
            pointwise_exact.OPENVINO_PASS)
# One file serves LiteRT with and without XNNPACK: both LiteRT targets share this list.
LITERT = (pack_int4.PASS, mult_as_view.PASS, concat_on_grid.PASS, requant_as_conv.PASS, tile_as_conv.PASS,
          dense.PASS, crd_to_dcr.PASS, widen.PASS, pointwise_exact.PASS)

TARGETS: dict[str, Target] = {t.name: t for t in (
    # MLAS's x86 uint8 x int8 kernel without VNNI adds pairs of products into int16 with
    # saturation; weights past +-64 take its u8u8 kernel instead, 1.6x slower (u8s8_weights).
    Target("onnxruntime", "onnx", ONNX, "onnxruntime",
           "onnxruntime's CPU provider (MLAS), x86 and aarch64: no kernel that rounds per CPU",
           weight_grid="7bit"),
    Target("openvino", "onnx", OPENVINO, "openvino",
           "OpenVINO's CPU plugin on x86 (f32 precision pinned): FakeQuantize ranges with folded dequantisation, "
           "LPT's rewritten adds (arithmetic/openvino.py)"),
    # XNNPACK computes alike on x86 and aarch64; only convs it leaves to the builtin kernels
    # (packed INT4 filters, in files made for litert-builtin) round per CPU.
    # Both LiteRT targets: int8 weights on [-127, 127] (TFLite's quantization spec), which the
    # ARM int8 GEMMs without the dot product rely on (spec.WEIGHT_GRIDS).
    Target("litert-xnnpack", "tflite", LITERT, "litert-xnnpack", "LiteRT with its XNNPACK delegate",
           {"aarch64": "litert-xnnpack-aarch64"}, weight_grid="narrow"),
    Target("litert-builtin", "tflite", LITERT, "litert-builtin",
           "LiteRT's builtin optimized int8 kernels (gemmlowp fixed point, ruy; rounding per CPU)",
           {"aarch64": "litert-builtin-aarch64"}, weight_grid="narrow"),
    Target("litert-builtin-ref", "tflite", LITERT, "litert-builtin-ref",
           "LiteRT's reference kernels (BUILTIN_REF: scalar gemmlowp, the same on every CPU)", weight_grid="narrow"),
)}

DEFAULT = {"onnx": "onnxruntime", "ort": "onnxruntime", "tflite": "litert-xnnpack"}
# Names files recorded before: ``onnxruntime-x86`` (its files hold QLinearAdd, which rounds
# per CPU; re-export them).
ALIASES = {"onnxruntime-x86": "onnxruntime"}

# What each serializer takes: a target of that format must ensure these.
SERIALIZER_REQUIRES: dict[str, tuple[Property, ...]] = {
    "onnx": (requant_as_conv.NO_INTEGER_REQUANT,),
    "tflite": (requant_as_conv.NO_INTEGER_REQUANT, tile_as_conv.NO_TILE, mult_as_view.NO_QUANTIZED_MULT,
               concat_on_grid.CONCAT_ON_GRID, crd_to_dcr.ALL_DCR),
}


def get(name: str) -> Target:
    from ..errors import BadInput

    name = ALIASES.get(name, name)
    if name not in TARGETS:
        raise BadInput(f"unknown target {name!r} (choose from {', '.join(TARGETS)})")
    return TARGETS[name]
