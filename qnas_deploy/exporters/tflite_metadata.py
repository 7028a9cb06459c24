"""TFLite Metadata (``metadata_schema.fbs``, the ``TFLITE_METADATA`` buffer) of an exported
super-resolution model: what Android Studio's ML model binding and the LiteRT support
library read to know the model takes an RGB image and gives one back.

Written with the schema's flatc-generated classes (``schema/``). Only members of
metadata version 1.0.0 are used (names, descriptions, version, author, license, image
content, normalisation, stats; ``metadata_version.cc`` in tflite-support lists what
raises the version: subgraph-level process units, tensor groups, custom metadata, ...),
so ``min_parser_version`` is ``1.0.0``, what its MetadataPopulator would write. The
project's own entries (``qnas.*``: found.json, export options) stay buffers of their own
beside it, as the runners read them.
"""
from __future__ import annotations

from dataclasses import dataclass

import flatbuffers

from .schema import metadata_schema_generated as md

NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"

# The pixel range each image container holds: uint8 pixels, int8 pixels - 128, float in
# [0, 1]. Each represents the real value pixel / 255, so one normalisation (mean 0, std
# 255: real = (pixel - 0) / 255) describes the input whatever its container; the
# quantized containers' own scale (1/255) and zero point (0, -128) then give the stored
# value, as the support library's quantize step does.
RANGES = {"uint8": (0.0, 255.0), "int8": (-128.0, 127.0), "float": (0.0, 1.0)}


@dataclass(frozen=True)
class ImageModel:
    """What the metadata says of one image-to-image model."""

    name: str
    description: str
    version: str
    author: str
    license: str | None
    io: str                         # "uint8", "int8" or "float"
    input_size: tuple[int, int]     # (H, W) the file is allocated for
    scale: int
    input_description: str
    output_description: str


def _strings(b: flatbuffers.Builder, **values) -> dict:
    return {k: b.CreateString(v) for k, v in values.items() if v is not None}


def _floats(b: flatbuffers.Builder, start, values) -> int:
    start(b, len(values))
    for v in reversed(values):
        b.PrependFloat32(v)
    return b.EndVector()


def _offsets(b: flatbuffers.Builder, start, offsets) -> int:
    start(b, len(offsets))
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _image_tensor(b: flatbuffers.Builder, name: str, description: str, size: tuple[int, int], io: str,
                  normalise: bool) -> int:
    s = _strings(b, name=name, description=description)
    md.ImageSizeStart(b)
    md.ImageSizeAddHeight(b, size[0])
    md.ImageSizeAddWidth(b, size[1])
    image_size = md.ImageSizeEnd(b)
    md.ImagePropertiesStart(b)
    md.ImagePropertiesAddColorSpace(b, md.ColorSpaceType.RGB)
    md.ImagePropertiesAddDefaultSize(b, image_size)
    props = md.ImagePropertiesEnd(b)
    md.ContentStart(b)
    md.ContentAddContentPropertiesType(b, md.ContentProperties.ImageProperties)
    md.ContentAddContentProperties(b, props)
    content = md.ContentEnd(b)
    units = None
    if normalise:
        mean = _floats(b, md.NormalizationOptionsStartMeanVector, [0.0])
        std = _floats(b, md.NormalizationOptionsStartStdVector, [255.0])
        md.NormalizationOptionsStart(b)
        md.NormalizationOptionsAddMean(b, mean)
        md.NormalizationOptionsAddStd(b, std)
        norm = md.NormalizationOptionsEnd(b)
        md.ProcessUnitStart(b)
        md.ProcessUnitAddOptionsType(b, md.ProcessUnitOptions.NormalizationOptions)
        md.ProcessUnitAddOptions(b, norm)
        units = _offsets(b, md.TensorMetadataStartProcessUnitsVector, [md.ProcessUnitEnd(b)])
    lo, hi = RANGES[io]
    vmax = _floats(b, md.StatsStartMaxVector, [hi])
    vmin = _floats(b, md.StatsStartMinVector, [lo])
    md.StatsStart(b)
    md.StatsAddMax(b, vmax)
    md.StatsAddMin(b, vmin)
    stats = md.StatsEnd(b)
    md.TensorMetadataStart(b)
    md.TensorMetadataAddName(b, s["name"])
    md.TensorMetadataAddDescription(b, s["description"])
    md.TensorMetadataAddContent(b, content)
    if units is not None:
        md.TensorMetadataAddProcessUnits(b, units)
    md.TensorMetadataAddStats(b, stats)
    return md.TensorMetadataEnd(b)


def model_metadata(m: ImageModel) -> bytes:
    """The ``TFLITE_METADATA`` buffer of ``m``: a ModelMetadata flatbuffer, identifier M001."""
    if m.io not in RANGES:
        raise ValueError(f"io must be one of {', '.join(RANGES)}, got {m.io!r}")
    b = flatbuffers.Builder(1024)
    h, w = m.input_size
    # The input's normalisation is what the support library applies to a bitmap before it
    # quantizes with the tensor's parameters; the output needs none to be read as pixels.
    inp = _image_tensor(b, "image", m.input_description, (h, w), m.io, normalise=True)
    out = _image_tensor(b, "upscaled_image", m.output_description, (h * m.scale, w * m.scale), m.io,
                        normalise=False)
    inputs = _offsets(b, md.SubGraphMetadataStartInputTensorMetadataVector, [inp])
    outputs = _offsets(b, md.SubGraphMetadataStartOutputTensorMetadataVector, [out])
    sg_name = b.CreateString(f"x{m.scale} super-resolution")
    md.SubGraphMetadataStart(b)
    md.SubGraphMetadataAddName(b, sg_name)
    md.SubGraphMetadataAddInputTensorMetadata(b, inputs)
    md.SubGraphMetadataAddOutputTensorMetadata(b, outputs)
    subgraph = md.SubGraphMetadataEnd(b)
    subgraphs = _offsets(b, md.ModelMetadataStartSubgraphMetadataVector, [subgraph])
    s = _strings(b, name=m.name, description=m.description, version=m.version, author=m.author,
                 license=m.license, min_parser_version=MIN_PARSER_VERSION)
    md.ModelMetadataStart(b)
    md.ModelMetadataAddName(b, s["name"])
    md.ModelMetadataAddDescription(b, s["description"])
    md.ModelMetadataAddVersion(b, s["version"])
    md.ModelMetadataAddSubgraphMetadata(b, subgraphs)
    md.ModelMetadataAddAuthor(b, s["author"])
    if "license" in s:
        md.ModelMetadataAddLicense(b, s["license"])
    md.ModelMetadataAddMinParserVersion(b, s["min_parser_version"])
    b.Finish(md.ModelMetadataEnd(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())
