"""``ExportOptions``: every choice an export takes, validated once, where it is made."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import BadInput

FORMATS = ("onnx", "ort", "tflite")
IO = {"onnx": ("uint8", "float"), "ort": ("uint8", "float"), "tflite": ("uint8", "int8", "float")}
# The serializer each format is written by: an ORT file is the ONNX file, converted.
SERIALIZER = {"onnx": "onnx", "ort": "onnx", "tflite": "tflite"}
# Targets a format's files are made for, where not every target of its serializer is: ORT
# files run in onnxruntime only.
ONLY_TARGETS = {"ort": ("onnxruntime",)}


@dataclass(frozen=True)
class ExportOptions:
    """``target`` defaults to the format's (``targets.DEFAULT``); ``input_size`` (H, W of
    the LR image) is TFLite's fixed tensor size, resizable by the runner."""

    format: str = "onnx"
    target: str | None = None
    adq: str = "static"
    int4: str = "container"
    io: str = "uint8"
    input_size: tuple[int, int] = (128, 128)
    simplify: bool = True
    # TFLite metadata's author and license (a model's license is its owner's to state:
    # none unless given, but for the zoo's own architectures).
    author: str = "qnas-deploy"
    license: str | None = None

    def __post_init__(self):
        from .targets import DEFAULT, TARGETS

        if self.format not in FORMATS:
            raise BadInput(f"--format {self.format}: this version exports {', '.join(FORMATS)}")
        if self.target is None:
            object.__setattr__(self, "target", DEFAULT[self.format])
        t = TARGETS.get(self.target)
        if t is None:
            raise BadInput(f"--target {self.target}: not a target (choose from {', '.join(TARGETS)})")
        if t.format != SERIALIZER[self.format]:
            raise BadInput(f"--target {self.target} writes {t.format} files, not {self.format}")
        if self.target not in ONLY_TARGETS.get(self.format, (self.target,)):
            raise BadInput(f"--target {self.target}: {self.format} files are made for "
                           f"{', '.join(ONLY_TARGETS[self.format])} only")
        if self.adq not in ("static", "dynamic"):
            raise BadInput(f"--adq must be static or dynamic, got {self.adq!r}")
        if self.format == "tflite" and self.adq == "dynamic":
            raise BadInput("--adq dynamic cannot be exported to TFLite (int8 TFLite has no per-image standard "
                           "deviation); export with --adq static")
        if self.int4 not in ("container", "packed"):
            raise BadInput(f"--int4 must be container or packed, got {self.int4!r}")
        if self.io == "int8" and self.format != "tflite":
            raise BadInput(f"--io int8 is for --format tflite ({self.format} takes uint8 or float images)")
        if self.io not in IO[self.format]:
            raise BadInput(f"--io must be one of {', '.join(IO[self.format])} for {self.format}, got {self.io!r}")
        h, w = self.input_size
        if h < 1 or w < 1:
            raise BadInput(f"--input-size must be positive, got {h}x{w}")

    def to_dict(self) -> dict:
        return asdict(self)
