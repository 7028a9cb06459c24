"""``qnas-deploy export``: spec or checkpoint -> calibrated model -> integer graph -> file."""
from __future__ import annotations

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
from ..zoo import resolve
from .ir import Graph
from .lower import lower

FORMATS = ("onnx", "tflite")


@dataclass
class Exported:
    path: str
    graph: Graph
    model: torch.nn.Module
    spec: object
    seconds: float
    weights: str
    options: dict = field(default_factory=dict)


def load_model(spec_or_ckpt: str, weights: str | None = None, log: Callable[[str], None] = print):
    """(spec, model, calibrated, weights description) from a spec/zoo name or a checkpoint."""
    if is_checkpoint_path(spec_or_ckpt):
        if weights:
            raise BadInput("give either a checkpoint or --weights, not both")
        ck = load_checkpoint(spec_or_ckpt)
        return ck.spec, ck.model, ck.calibrated, Path(spec_or_ckpt).name
    spec = resolve(spec_or_ckpt)
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


def export(source: str, out: str, fmt: str = "onnx", weights: str | None = None, calib: str | None = None,
           adq: str = "static", int4: str = "container", io: str = "uint8", datasets_root: str | None = None,
           simplify: bool = True, input_size: tuple[int, int] = (128, 128),
           log: Callable[[str], None] = print) -> Exported:
    """Export ``source`` to ``out``: ``fmt`` onnx (QDQ, dynamic size) or tflite (int8, NHWC,
    ``input_size`` LR pixels, resizable by the runner). Nothing is left at ``out`` on error."""
    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt}: this version exports {', '.join(FORMATS)}")
    if fmt == "tflite" and adq == "dynamic":
        raise BadInput("--adq dynamic cannot be exported to TFLite (int8 TFLite has no per-image standard "
                       "deviation); export with --adq static")
    t0 = time.perf_counter()
    spec, model, calibrated, wdesc = load_model(source, weights, log)
    if calib or not calibrated:
        calibrate(model, calibration_batches(spec, calib, datasets_root))
    model.eval()
    graph = lower(model, adq if spec.adq else None)
    options = {"format": fmt, "adq": adq if spec.adq else "none", "int4": int4, "io": io, "weights": wdesc,
               "calibration": calib or ("checkpoint" if calibrated else "synthetic")}
    if fmt == "tflite":
        options["input_size"] = f"{input_size[0]}x{input_size[1]}"
    from ..cost import summary
    from . import onnx as onnx_writer

    metadata = {"qnas.found_json": spec.to_dict(), "qnas.export_options": options,
                "qnas.layer_bits": {l.name: [l.w_bits, l.a_bits] for l in spec.layers},
                "qnas.cost": spec.cost or summary(spec)}
    if fmt == "tflite":
        from .tflite import to_tflite
        from .tflite_runner import interpreter

        data = to_tflite(graph, io=io, input_size=input_size, int4=int4, metadata=metadata)
        interpreter(data, threads=1)  # the runtime's own verifier: it must load and allocate
        with atomic_path(out) as tmp:
            Path(tmp).write_bytes(data)
        return Exported(str(out), graph, model, spec, time.perf_counter() - t0, wdesc, options)
    model_proto = onnx_writer.to_onnx(graph, io=io, int4=int4, metadata=metadata)
    if simplify:
        model_proto = onnx_writer.simplify(model_proto)
    import onnx

    onnx.checker.check_model(model_proto)
    with atomic_path(out) as tmp:
        onnx.save(model_proto, str(tmp))
    return Exported(str(out), graph, model, spec, time.perf_counter() - t0, wdesc, options)
