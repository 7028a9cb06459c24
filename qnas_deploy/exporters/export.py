"""The export pipeline: ``prepare`` -> ``lower`` -> ``write``, and ``export`` doing all three.

``prepare`` turns a spec, zoo name or checkpoint into a calibrated model in inference
mode; ``lower`` writes its canonical integer graph (the space's ``lower`` hook) and runs
the target's passes; ``write`` hands the result to the format's serializer, checks the
file with the runtime's own loader and writes it atomically. ``bench bitops``, the latency
table and the parity benchmark use the same three steps, so every file they make carries
the same metadata and passes the same checks. This is the only module that imports a
serializer.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .._io import atomic_path
from ..calibrate import calibrate
from ..checkpoint import is_checkpoint_path, load_checkpoint
from ..errors import BadInput
from ..spaces import build_model
from ..zoo import load_zoo, names as zoo_names, resolve
from . import targets, tflite_metadata
from .builder import lower_model
from .ir import Graph
from .options import ExportOptions


@dataclass
class Prepared:
    """A calibrated model in inference mode, and where its weights and ranges came from."""

    spec: object
    model: torch.nn.Module
    weights: str          # a checkpoint's file name, or "initialised"
    calibration: str      # "checkpoint", "synthetic" or the --calib data


@dataclass
class Exported:
    path: str
    graph: Graph          # canonical (what the PyTorch model computes)
    lowered: Graph        # the target's graph, what the file holds
    model: torch.nn.Module
    spec: object
    seconds: float
    weights: str
    options: dict = field(default_factory=dict)


def load_model(spec_or_ckpt, weights: str | None = None, log: Callable[[str], None] = print):
    """(spec, model, calibrated, weights description) from a spec (an ``ArchSpec``, a
    found.json path or a zoo name) or a checkpoint."""
    from ..spec import ArchSpec

    if not isinstance(spec_or_ckpt, ArchSpec) and is_checkpoint_path(spec_or_ckpt):
        if weights:
            raise BadInput("give either a checkpoint or --weights, not both")
        ck = load_checkpoint(spec_or_ckpt)
        return ck.spec, ck.model, ck.calibrated, Path(spec_or_ckpt).name
    spec = spec_or_ckpt if isinstance(spec_or_ckpt, ArchSpec) else resolve(spec_or_ckpt)
    if weights:
        ck = load_checkpoint(weights, spec)
        return ck.spec, ck.model, ck.calibrated, Path(weights).name
    log("no --weights: exporting with initialised weights (for latency work; the outputs are not images)")
    torch.manual_seed(0)
    return spec, build_model(spec), False, "initialised"


def calibration_batches(spec, calib: str | None, datasets_root: str | None, n: int = 4) -> list[torch.Tensor]:
    """LR batches to calibrate on: patches of ``--calib`` images, else smooth random images."""
    from ..data import PatchSampler, load_pairs
    from ..infer import min_input_size

    size = max(32, min_input_size(spec))
    if calib:
        sampler = PatchSampler(load_pairs(calib, spec.scale, datasets_root, training=True), spec.scale, size, seed=0)
        return [sampler.batch(4)[0] for _ in range(n)]
    g = torch.Generator().manual_seed(0)
    return [torch.nn.functional.interpolate(torch.rand(4, 3, size // 4, size // 4, generator=g), size=(size, size),
                                            mode="bicubic", align_corners=False).clamp(0, 1) for _ in range(n)]


def prepare(source, weights: str | None = None, calib: str | None = None, datasets_root: str | None = None,
            log: Callable[[str], None] = print) -> Prepared:
    """``source`` (found.json, zoo name or checkpoint) as a calibrated model in inference mode.
    A model without calibrated ranges (initialised weights, an unfinished run) or with
    ``calib`` given is calibrated here."""
    spec, model, calibrated, wdesc = load_model(source, weights, log)
    if wdesc == "initialised" and not calib:
        model = _initialised(spec, model)
    elif calib or not calibrated:
        calibrate(model, calibration_batches(spec, calib, datasets_root))
    return Prepared(spec, model.eval(), wdesc, calib or ("checkpoint" if calibrated else "synthetic"))


# Initialised weights calibrated on the synthetic batches are a function of the spec alone;
# their calibration (with its exactness snaps, seconds on the larger nets) is kept per
# process for the next export of the same spec (latency sweeps, a search's candidates).
_INITIALISED: dict[str, torch.nn.Module] = {}


def _initialised(spec, model: torch.nn.Module) -> torch.nn.Module:
    key = json.dumps(spec.to_dict(), sort_keys=True, default=str)
    if key not in _INITIALISED:
        if len(_INITIALISED) >= 16:
            _INITIALISED.clear()
        calibrate(model, calibration_batches(spec, None, None))
        _INITIALISED[key] = model.eval()
    return copy.deepcopy(_INITIALISED[key])


def canonical(model: torch.nn.Module, options: ExportOptions) -> Graph:
    """The model's integer graph before any target pass (what the PyTorch model computes)."""
    return lower_model(model, options.adq if model.spec.adq else None)


def lower(model: torch.nn.Module, options: ExportOptions) -> Graph:
    """The model's integer graph lowered for ``options.target``."""
    return targets.get(options.target).lower(canonical(model, options), options)


def metadata(prepared: Prepared, options: ExportOptions) -> dict:
    """What every exported file carries: the found.json, the export options, bits and cost."""
    from ..cost import summary

    spec = prepared.spec
    opts = {"format": options.format, "target": options.target, "adq": options.adq if spec.adq else "none",
            "int4": options.int4, "weight_grid": spec.weight_grid,
            "io": options.io, "weights": prepared.weights, "calibration": prepared.calibration}
    meta = {"qnas.found_json": spec.to_dict(), "qnas.export_options": opts,
            "qnas.layer_bits": {l.name: [l.w_bits, l.a_bits] for l in spec.layers},
            "qnas.cost": spec.cost or summary(spec)}
    if options.format == "tflite":
        opts["input_size"] = f"{options.input_size[0]}x{options.input_size[1]}"
        opts.update(author=options.author, license=options.license)
        meta[tflite_metadata.NAME] = tflite_metadata.model_metadata(image_model(prepared, options))
    return meta


_IO_TEXT = {"uint8": "uint8 pixels 0..255", "int8": "int8 values pixel - 128 (-128..127)",
            "float": "float32 values pixel / 255 (0..1)"}


def image_model(prepared: Prepared, options: ExportOptions) -> tflite_metadata.ImageModel:
    """What a TFLite file's standard metadata says of ``prepared``, exported with ``options``."""
    import hashlib
    import json

    from .. import __version__

    spec, s = prepared.spec, prepared.spec.scale
    h, w = options.input_size
    found = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    bits = sorted({l.w_bits for l in spec.layers} | {l.a_bits for l in spec.layers})
    what = (spec.description or f"a {spec.space}-space network").rstrip(".")
    description = (
        f"x{s} super-resolution: {what}. Quantization-aware architecture search and training by qnas-deploy "
        f"{__version__} ({'/'.join(map(str, bits))}-bit layers), exported as a fully integer graph for "
        f"{options.target}; weights: {prepared.weights}. One RGB image in, NHWC [1, H, W, 3], {_IO_TEXT[options.io]}; "
        f"the same image {s} times larger out, NHWC [1, {s}H, {s}W, 3], same type. Allocated for {h}x{w}; any size "
        f"runs after resizing the input tensor (LiteRT: resizeInput, then allocateTensors).")
    # A zoo architecture with initialised weights is the project's alone, under its license;
    # anything trained is its owner's to license.
    zoo = spec.name in zoo_names() and load_zoo(spec.name).to_dict() == spec.to_dict()
    license = options.license or ("Apache-2.0" if zoo and prepared.weights == "initialised" else None)
    return tflite_metadata.ImageModel(
        name=spec.name or "qnas-deploy model", description=description,
        version=f"found.json sha256 {found}; weights {prepared.weights}", author=options.author,
        license=license, io=options.io, input_size=(h, w), scale=s,
        input_description=f"Low-resolution RGB image, {_IO_TEXT[options.io]}, NHWC; height and width resizable.",
        output_description=f"RGB image {s}x the input's height and width, {_IO_TEXT[options.io]}, NHWC.")


def serialize_files(graph: Graph, options: ExportOptions, meta: dict | None = None,
                    name: str = "model") -> dict[str, bytes]:
    """The files of a target-lowered ``graph``, each checked by the runtime's own loader,
    keyed by what follows the output's stem: ``""`` the model file itself; an ORT file's
    operator configuration beside it (``name`` is the file's name it records)."""
    if options.format == "tflite":
        from ..runtimes.litert import interpreter
        from .tflite import to_tflite

        data = to_tflite(graph, io=options.io, input_size=options.input_size, metadata=meta)
        interpreter(data, threads=1)  # the runtime's own verifier: it must load and allocate
        return {"": data}
    import onnx

    from . import onnx as onnx_writer

    proto = onnx_writer.to_onnx(graph, io=options.io, metadata=meta)
    if options.simplify:
        proto = onnx_writer.simplify(proto)
    onnx.checker.check_model(proto)
    if options.format == "ort":
        from . import ort_format

        data, config = ort_format.to_ort(proto.SerializeToString(), name)
        ort_format.check(data)
        return {"": data, ort_format.CONFIG_SUFFIX: config.encode()}
    return {"": proto.SerializeToString()}


def serialize(graph: Graph, options: ExportOptions, meta: dict | None = None) -> bytes:
    """The model file's bytes for a target-lowered ``graph`` (see :func:`serialize_files`)."""
    return serialize_files(graph, options, meta)[""]


def companion_paths(out: str | Path, options: ExportOptions) -> list[Path]:
    """The files written beside ``out`` (an ORT file's operator configuration)."""
    if options.format != "ort":
        return []
    from .ort_format import CONFIG_SUFFIX

    p = Path(out)
    return [p.with_name(p.stem + CONFIG_SUFFIX)]


def compile_graph(graph: Graph, options: ExportOptions, meta: dict | None = None) -> tuple[Graph, bytes]:
    """A canonical ``graph`` lowered for ``options.target`` and serialized: (lowered, file bytes)."""
    lowered = targets.get(options.target).lower(graph, options)
    return lowered, serialize(lowered, options, meta)


def write(graph: Graph, out: str | Path, options: ExportOptions, meta: dict | None = None) -> None:
    """Serialize ``graph`` to ``out`` (and its companion files beside it); nothing is left
    at any of them on error."""
    files = serialize_files(graph, options, meta, Path(out).name)
    paths = [Path(out)] + companion_paths(out, options)
    suffixes = [""] + [p.name[len(Path(out).stem):] for p in paths[1:]]
    with contextlib.ExitStack() as stack:
        # Every file is written under its temporary name first: the renames happen only
        # when all of them are complete.
        for p, key in zip(paths, suffixes):
            stack.enter_context(atomic_path(p)).write_bytes(files[key])


def grid_hints(lowered, options, spec) -> list[str]:
    """What the trained weight grid costs in this target's runtime, and the training that avoids it."""
    if targets.get(options.target).weight_grid == spec.weight_grid:
        return []
    convs = [n for n in lowered.nodes if n.op == "conv"]
    hints = []
    slow = [n.name for n in convs if n.attrs.storage == "uint8"]
    if slow:
        hints.append(f"{len(slow)} conv(s) hold weights past +-64, stored as uint8 for onnxruntime's exact u8u8 kernel "
                     f"(about 1.6x slower than its u8s8 one on x86); train with --for-target {options.target} for "
                     "the fast one")
    if options.format == "tflite":
        edge = [n.name for n in convs if n.attrs.storage == "int8" and bool((n.attrs.weight == -128).any())]
        if edge:
            hints.append(f"{len(edge)} conv(s) hold the int8 weight -128, outside TFLite's int8 weight range "
                         "[-127, 127]: ARM CPUs without the dot product (Cortex-A53, A72) compute them wrongly in "
                         f"XNNPACK and the builtin kernels; train with --for-target {options.target} (weights on "
                         "[-127, 127]) for a file exact there")
    return hints


def add_hints(graph, options) -> list[str]:
    """Adds and muls of the canonical ``graph`` that LiteRT's fixed-point ADD or MUL rounds
    otherwise than the trained model on some input pair: a checkpoint calibrated before
    their scales were snapped (``add_scales``); for the builtin kernels, also the muls the
    snap left rounding a few pairs twice there to be exact in OpenVINO (``add_scales``)."""
    if options.format != "tflite":
        return []
    from . import add_scales

    inexact = add_scales.inexact(graph)
    muls = {n.output for n in graph.nodes if n.op == "mul"}

    def by_design(t, bad):  # exact in OpenVINO and XNNPACK, some pairs rounded twice in the builtin MUL
        return t in muls and set(bad) == {"litert-builtin"}
    off = [t for t, bad in inexact.items() if any(k.startswith("litert") for k in bad) and not by_design(t, bad)]
    hints = []
    if off:
        hints.append(f"{len(off)} add(s) or mul(s) ({', '.join(off[:3])}{', ...' if len(off) > 3 else ''}) round "
                     "some input pairs otherwise in LiteRT's fixed-point ADD or MUL than in the trained model (a "
                     "checkpoint calibrated before their scales were snapped): export with --calib DATA to "
                     "recalibrate, which snaps them, for a file exact there")
    few = {t: bad["litert-builtin"] for t, bad in inexact.items() if by_design(t, bad)}
    if few and options.target == "litert-builtin":
        hints.append(f"{len(few)} mul(s) ({', '.join(list(few)[:3])}{', ...' if len(few) > 3 else ''}) round "
                     f"{max(few.values())} or fewer of their 65536 input pairs otherwise in LiteRT's builtin MUL "
                     "(which rounds twice) than in the trained model: no scale near them is exact there and in "
                     "OpenVINO alike, and calibration kept OpenVINO exact (XNNPACK, LiteRT's default, is exact)")
    return hints


def openvino_hints(model, graph, options) -> list[str]:
    """For the ``openvino`` target: adds of the canonical ``graph`` and learned convs of
    ``model`` that OpenVINO rounds otherwise than the trained model on some input (a
    checkpoint calibrated before their scales were snapped: ``add_scales``, ``conv_scales``)."""
    if options.target != "openvino":
        return []
    from . import add_scales, conv_scales

    muls = {n.output for n in graph.nodes if n.op == "mul"}
    adds = [t for t, bad in add_scales.inexact(graph).items() if "openvino" in bad and t not in muls]
    convs = conv_scales.inexact(model, arm=False)
    if not adds and not convs:
        return []
    parts = ([f"{len(adds)} add(s) ({', '.join(adds[:3])}{', ...' if len(adds) > 3 else ''})"] if adds else []) + \
        ([f"{sum(convs.values())} conv channel(s) in {len(convs)} conv(s)"] if convs else [])
    return [f"{' and '.join(parts)} round some inputs otherwise in OpenVINO than in the trained model (a checkpoint "
            "calibrated before their scales were snapped): export with --calib DATA to recalibrate, which snaps "
            "them, for a file exact there"]


def export(source: str, out: str, fmt: str = "onnx", weights: str | None = None, calib: str | None = None,
           adq: str = "static", int4: str = "container", io: str = "uint8", datasets_root: str | None = None,
           simplify: bool = True, input_size: tuple[int, int] = (128, 128), target: str | None = None,
           author: str = "qnas-deploy", license: str | None = None,
           log: Callable[[str], None] = print) -> Exported:
    """Export ``source`` to ``out``: ``fmt`` onnx (QDQ, dynamic size), ort (that file in
    onnxruntime Mobile's ORT format, with its operator configuration beside it) or tflite
    (int8, NHWC, ``input_size`` LR pixels, resizable by the runner), for ``target``
    (default: the format's). Nothing is left at ``out`` on error."""
    options = ExportOptions(format=fmt, target=target, adq=adq, int4=int4, io=io, input_size=tuple(input_size),
                            simplify=simplify, author=author, license=license)
    t0 = time.perf_counter()
    p = prepare(source, weights, calib, datasets_root, log)
    graph = canonical(p.model, options)
    lowered = targets.get(options.target).lower(graph, options)
    for hint in grid_hints(lowered, options, p.spec) + add_hints(graph, options) + \
            openvino_hints(p.model, graph, options):
        log(hint)
    meta = metadata(p, options)
    write(lowered, out, options, meta)
    return Exported(str(out), graph, lowered, p.model, p.spec, time.perf_counter() - t0, p.weights,
                    meta["qnas.export_options"])
