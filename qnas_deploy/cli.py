"""The ``qnas-deploy`` command line: option parsing only; the work lives in the library.

Conventions shared by every command: ``--json PATH`` (``-`` for stdout) writes the
machine-readable result; exit 0 on success, 2 on bad input with one line ``error: ...``,
1 on a failure at run time; ``--debug`` shows tracebacks; files are written atomically.
"""
from __future__ import annotations

import sys

import click

from . import __version__
from ._io import check_writable, write_json


def _parse_size(value: str) -> tuple[int, int]:
    """``HxW`` (or one number for a square) -> ``(H, W)``."""
    try:
        parts = [int(p) for p in value.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise click.BadParameter(f"expected HxW such as 32x32, got {value!r}")
    return parts[0], parts[1]


class _SpaceName(click.ParamType):
    """A name from the space registry (``spaces.names()``), looked up when the option is
    used, so that starting the CLI imports no PyTorch."""

    name = "space"

    def _names(self) -> tuple[str, ...]:
        from .spaces import names

        return names()

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self._names()) + "]"

    def convert(self, value, param, ctx):
        if value not in self._names():
            self.fail(f"{value!r} is not a search space (choose from {', '.join(self._names())})", param, ctx)
        return value


def _space_option(f):
    return click.option("--space", type=_SpaceName(), default="basic", show_default=True,
                        help="Search space (the space registry's names).")(f)


def _size_option(default: str):
    return click.option("--size", default=default, show_default=True, metavar="HxW",
                        callback=lambda ctx, p, v: _parse_size(v),
                        help="LR input size, height x width (180x320: a landscape 720p frame at x4).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qnas-deploy")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Quantization-aware NAS for super-resolution, compiled to integer ONNX and TFLite."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _runtime_options(f):
    f = click.option("--no-xnnpack", is_flag=True, help="TFLite: builtin kernels only (XNNPACK is on by default).")(f)
    return click.option("--threads", type=click.IntRange(1), default=None,
                        help="Threads for onnxruntime / LiteRT (default: the runtime's).")(f)


_allow_initialised_option = click.option(
    "--allow-initialised", is_flag=True,
    help="Run a file exported without trained weights (its output is noise) instead of refusing it.")


@cli.command()
@click.argument("spec")
@_size_option("32x32")
@click.option("--json", "json_path", metavar="PATH", help="Write the numbers as JSON ('-' for stdout).")
def info(spec: str, size: tuple[int, int], json_path: str | None) -> None:
    """Print the layers, operations, bits, MACs and BitOps of SPEC.

    SPEC is a found.json path or a zoo name (see `qnas-deploy zoo`). BitOps = MACs x
    w_bits x a_bits at the LR --size (the paper reports 32x32); FLOPs at 256x256.
    """
    from .cost import FLOPS_SIZE, layer_costs
    from .report import info_table
    from .spaces import build_model
    from .zoo import resolve

    check_writable(json_path)
    arch = resolve(spec)
    model = build_model(arch)
    report = layer_costs(arch, size, model)
    flops = layer_costs(arch, FLOPS_SIZE, model).flops
    if json_path:
        write_json(json_path, {"name": arch.name, "space": arch.space, "scale": arch.scale,
                               "flops_256x256": flops, **report.to_dict()})
    if json_path != "-":
        click.echo(info_table(arch, report, flops))


@cli.command()
@click.argument("found", type=click.Path(dir_okay=False))
@click.option("-o", "--out", metavar="PATH", help="Write here instead of over FOUND.")
def upgrade(found: str, out: str | None) -> None:
    """Rewrite FOUND (a found.json) at the current format version.

    Every version this qnas-deploy reads is also read as it is; upgrading only spares
    the migration on each load and lets older documents take newer fields (widths:
    version 2).
    """
    from .spec import upgrade as upgrade_file

    check_writable(out)
    old, new = upgrade_file(found, out)
    click.echo(f"{out or found}: version {old} -> {new}" if old != new else f"{out or found}: already version {new}")


@cli.command()
def zoo() -> None:
    """List the architectures shipped with the package."""
    from .cost import summary
    from .zoo import load_zoo, names

    archs = [load_zoo(name) for name in names()]
    # Sized to the longest entry: a zoo file added with a long name must not shift the columns.
    w_name, w_space = (max(len(s) for s in col) for col in (names(), [a.space for a in archs]))
    for name, arch in zip(names(), archs):
        bitops = (arch.cost or summary(arch))["bitops_32x32"]
        click.echo(f"{name:{w_name}s}  {arch.space:{w_space}s}  x{arch.scale}  {bitops / 1e9:8.2f} GBitOps@32x32  "
                   f"{arch.description or ''}".rstrip())


def _data_option(default: str | None, help_: str):
    return click.option("--data", default=default, show_default=default is not None, required=default is None,
                        help=help_ + " Comma-separated folders or dataset names (resolved under --datasets-root).")


_datasets_root_option = click.option(
    "--datasets-root", metavar="DIR",
    help="Where dataset names resolve (default: $QNAS_DATASETS, then ../shared/datasets).")


@cli.command("eval")
@click.argument("model", required=False)
@click.option("--bicubic", is_flag=True, help="Score MATLAB-style bicubic upscaling (the baseline every SR paper prints).")
@_data_option("Set5,Set14", "Benchmark sets.")
@_datasets_root_option
@click.option("--scale", type=click.IntRange(2, 4), default=None, help="Upscaling factor (default: the model's, or 4).")
@click.option("--json", "json_path", metavar="PATH", help="Write per-image and mean PSNR/SSIM as JSON ('-' for stdout).")
@_runtime_options
@_allow_initialised_option
def eval_cmd(model: str | None, bicubic: bool, data: str, datasets_root: str | None, scale: int | None,
             json_path: str | None, threads: int | None, no_xnnpack: bool, allow_initialised: bool) -> None:
    """Mean and per-image PSNR/SSIM (Y channel, `scale` pixels shaved) on benchmark sets.

    MODEL is a trained checkpoint (.pt, the fake-quantized model as trained) or an exported
    file (.onnx, .ort, .tflite); --bicubic scores the bicubic baseline instead.
    """
    from .errors import BadInput
    from .evaluate import bicubic_upscaler, evaluate_sets, results_table
    from .runtimes import grey_aware
    from .runtimes import open_model
    from .zoo import model_file
    from .runtimes.opened import check_trained

    if bicubic == bool(model):
        raise BadInput("eval: give either MODEL or --bicubic" + (", not both" if bicubic else ""))
    check_writable(json_path)
    sets = [s for s in data.split(",") if s]
    if bicubic:
        scale = scale or 4
        run, method = bicubic_upscaler(scale), "bicubic"
    else:
        opened = open_model(model_file(model), threads=threads, xnnpack=not no_xnnpack)
        if not allow_initialised:
            check_trained(opened)
        if scale and scale != opened.scale:
            raise BadInput(f"--scale {scale}: {model} upscales x{opened.scale}")
        scale, run, method = opened.scale, grey_aware(opened.run), opened.description
    result = evaluate_sets(run, sets, scale, datasets_root)
    result["method"] = method
    if json_path:
        write_json(json_path, result)
    if json_path != "-":
        click.echo(results_table(result, method))


@cli.command()
@click.argument("spec")
@_data_option(None, "Training images: folders of HR images or benchmark-layout sets.")
@click.option("-o", "--output", "out", required=True, metavar="PATH", help="Checkpoint to write (every epoch).")
@click.option("--val", metavar="DATA", help="Validation sets scored in PSNR after every epoch.")
@_datasets_root_option
@click.option("--recipe", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="Training recipe: 'default' (Adam 2e-3, 2% warm-up, cosine; chosen by measurement) or 'paper' "
                   "(QuantNAS appendix D: SGD 1e-3, momentum 0.9). The options below override it.")
@click.option("--epochs", type=int, default=None, help="[recipe: 30]")
@click.option("--iters", type=int, default=None, help="Iterations per epoch. [recipe: 1000]")
@click.option("--batch", type=int, default=None, help="[recipe: 16]")
@click.option("--patch", type=int, default=None, help="LR patch side in pixels. [recipe: 32]")
@click.option("--lr", type=float, default=None, help="Peak learning rate. [default 2e-3, paper 1e-3]")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None, help="[default adam, paper sgd]")
@click.option("--warmup", type=float, default=None, help="Fraction of the run with a linear lr warm-up. [default 0.02]")
@click.option("--float-warmup", type=float, default=None,
              help="Fraction of the run trained in float before the quantizers turn on. [0]")
@click.option("--loss", type=click.Choice(["l1", "l2"]), default=None, help="[l1]")
@click.option("--init", "init_from", metavar="FOUND", default=None,
              help="Start from the weights the search's supernet trained for SPEC's path (the found.json a "
                   "search wrote, with its .search.pt beside it).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--calib-batches", type=int, default=8, show_default=True,
              help="Batches used to calibrate BN, ADQ and quantizer ranges at the end.")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="Loader processes cutting patches (the patches do not depend on it).")
@click.option("--no-cache", is_flag=True,
              help="Decode the training images into memory instead of the memory-mapped cache "
                   "(~/.cache/qnas-deploy/decoded, or $QNAS_CACHE/decoded).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, or auto.")
@click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True,
              help="Mixed precision: convolutions in bfloat16 (CPU or CUDA) or float16 (CUDA, loss-scaled); "
                   "the quantizers stay float32, and evaluation and export are unchanged.")
@click.option("--resume", is_flag=True, help="Continue the run saved at --output.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--for-target", metavar="NAME", default=None,
              help="Train on the weight grid the export target's int8 kernels run fastest and exact (onnxruntime: "
                   "7-bit 8-bit weights, which its x86 kernel cannot saturate; LiteRT: [-127, 127]); the "
                   "checkpoint's found.json records it.")
def train(spec: str, data: str, out: str, val: str | None, datasets_root: str | None, recipe: str,
          epochs: int | None, iters: int | None, batch: int | None, patch: int | None, lr: float | None,
          optimizer: str | None, warmup: float | None, float_warmup: float | None, loss: str | None,
          init_from: str | None, seed: int, calib_batches: int, workers: int, no_cache: bool, device: str,
          amp: str, resume: bool, no_progress: bool, for_target: str | None) -> None:
    """Quantization-aware training of SPEC (found.json or zoo name)."""
    from .data import cached_training_store, load_pairs
    from .train import TrainConfig, train as run_train
    from .zoo import resolve

    check_writable(out)
    arch = resolve(spec)
    if for_target:
        from .exporters.targets import get as get_target

        arch = arch.with_(weight_grid=get_target(for_target).weight_grid)
    cfg = TrainConfig.from_recipe(recipe, epochs=epochs, iters=iters, batch=batch, patch=patch, lr=lr,
                                  optimizer=optimizer, warmup=warmup, float_warmup=float_warmup, loss=loss,
                                  seed=seed, calib_batches=calib_batches, init=init_from, amp=amp)
    dev = _device(device)
    if no_cache:
        pairs = load_pairs(data, arch.scale, datasets_root, training=True)
    else:
        pairs = cached_training_store(data, arch.scale, datasets_root, progress=not no_progress)
    val_pairs = load_pairs(val, arch.scale, datasets_root, training=False) if val else None
    import os

    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks and writes
    if main_rank:
        click.echo(f"training {arch.name or spec} on {len(pairs)} images ({dev}, recipe {recipe})", err=True)
    run_train(arch, pairs, out, cfg, val_pairs, resume=resume, device=dev, progress=not no_progress,
              log=lambda m: click.echo(m, err=True), workers=workers)
    if main_rank:
        click.echo(f"wrote {out}", err=True)


def _device(name: str) -> str:
    import torch

    from .errors import BadInput

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {name}: no CUDA device here")
    if name != "cpu" and not name.startswith("cuda"):
        raise BadInput(f"--device {name}: expected cpu, cuda, cuda:N or auto")
    return name


@cli.command()
@click.argument("model")
@click.argument("image")
@click.option("-o", "--output", "out", metavar="PATH", help="Output PNG (default: IMAGE_x{scale}.png beside it).")
@click.option("--tile", type=click.IntRange(0), default=256, show_default=True,
              help="LR tile side for large images (0: no tiling).")
@click.option("--overlap", type=click.IntRange(0), default=16, show_default=True,
              help="LR pixels of context around each tile.")
@click.option("--compare", metavar="PATH", help="Also write bicubic | model side by side to PATH.")
@_runtime_options
@_allow_initialised_option
@click.option("--no-progress", is_flag=True, help="No progress bar over the tiles (none either when stderr is not a terminal).")
def upscale(model: str, image: str, out: str | None, tile: int, overlap: int, compare: str | None,
            threads: int | None, no_xnnpack: bool, allow_initialised: bool, no_progress: bool) -> None:
    """Upscale IMAGE with MODEL (checkpoint .pt, .onnx, .ort or .tflite)."""
    from pathlib import Path

    from .infer import upscale_file
    from .runtimes import open_model
    from .zoo import model_file

    check_writable(out, compare)
    opened = open_model(model_file(model), threads=threads, xnnpack=not no_xnnpack)
    out = out or str(Path(image).with_name(f"{Path(image).stem}_x{opened.scale}.png"))
    upscale_file(opened, image, out, tile=tile, overlap=overlap, compare=compare, allow_initialised=allow_initialised,
                 progress=not no_progress, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {out}" + (f" and {compare}" if compare else ""), err=True)


@cli.command()
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["onnx", "ort", "tflite"]), default="onnx", show_default=True,
              help="onnx: QDQ ONNX; ort: the same graph in onnxruntime Mobile's ORT format, with the operator "
                   "configuration of a reduced build beside it; tflite: int8 TFLite with standard metadata.")
@click.option("-o", "--output", "out", metavar="PATH", help="Output file (default: SOURCE name + .onnx/.ort/.tflite).")
@click.option("--weights", metavar="CKPT", help="Trained checkpoint for SOURCE (a found.json or zoo name).")
@click.option("--calib", metavar="DATA", help="Recalibrate ranges on these images (folders or dataset names).")
@_datasets_root_option
@click.option("--adq", type=click.Choice(["static", "dynamic"]), default="static", show_default=True,
              help="static: calibrated constant folded into the convs (fully integer); dynamic: per-image subgraph.")
@click.option("--int4", type=click.Choice(["container", "packed"]), default="container", show_default=True,
              help="Sub-8-bit weights in int8 containers, or packed INT4 (TFLite INT4 filters, --target "
                   "litert-builtin only: no other runtime computes them exactly).")
@click.option("--io", type=click.Choice(["uint8", "int8", "float"]), default="uint8", show_default=True,
              help="Input/output images: uint8 (NCHW in ONNX, NHWC in TFLite), int8 (TFLite), or float in [0, 1].")
@click.option("--input-size", default="128x128", show_default=True, metavar="HxW",
              help="TFLite: the LR input size the file is allocated for (the runner resizes it).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--target", metavar="NAME", default=None,
              help="Export target (default: onnxruntime for onnx, litert-xnnpack for tflite, whose file also "
                   "serves litert-builtin and litert-builtin-ref); see the README's target table.")
@click.option("--author", default="qnas-deploy", show_default=True, help="TFLite metadata: the model's author.")
@click.option("--license", "license_", metavar="TEXT", default=None,
              help="TFLite metadata: the model's license (for example an SPDX name); default: none stated, but "
                   "Apache-2.0 for a zoo architecture exported without trained weights.")
@click.option("--init", "initialised", is_flag=True,
              help="A zoo entry with initialised weights, not its shipped trained ones (for latency work).")
def export(source: str, fmt: str, out: str | None, weights: str | None, calib: str | None,
           datasets_root: str | None, adq: str, int4: str, io: str, input_size: str, no_simplify: bool,
           target: str | None, author: str, license_: str | None, initialised: bool) -> None:
    """Export SOURCE (found.json, zoo name or checkpoint .pt) to a fully integer QDQ ONNX file
    (or its ORT format for onnxruntime Mobile) or an int8 TFLite flatbuffer."""
    from pathlib import Path

    from .exporters.export import export as run_export

    from .errors import BadInput

    try:
        h, w = (int(v) for v in input_size.lower().split("x"))
    except ValueError:
        raise BadInput(f"--input-size must be HxW (for example 180x320), got {input_size!r}") from None
    from .exporters.export import companion_paths
    from .exporters.options import ExportOptions

    out = out or f"{Path(source).stem}.{fmt}"
    from .zoo import names, shipped_weights

    if initialised and weights:
        raise BadInput("give either --weights or --init, not both")
    shipped = None
    if not Path(source).is_file() and source in names() and not weights and not initialised:
        shipped = shipped_weights(source)
    options = ExportOptions(format=fmt, target=target, adq=adq, io=io, int4=int4, input_size=(h, w))
    beside = companion_paths(out, options)
    check_writable(out, *beside)
    if shipped is not None:
        click.echo(f"{source}: its shipped trained weights (--init for initialised ones)", err=True)
        source = str(shipped)  # the checkpoint holds its own found.json (trained on the narrow grid)
    e = run_export(source, out, fmt, weights=weights, calib=calib, adq=adq, int4=int4, io=io,
                   datasets_root=datasets_root, simplify=not no_simplify, input_size=(h, w), target=target,
                   author=author, license=license_, log=lambda m: click.echo(m, err=True))
    convs = len(e.graph.conv_nodes())
    click.echo(f"wrote {out}: {convs} convs, {len(e.graph.nodes)} graph nodes, weights {e.weights}, "
               f"{e.seconds:.1f} s" + "".join(f"; and {p}" for p in beside), err=True)


@cli.command()
@_space_option
@click.option("--bits", default="4,8", show_default=True, help="Bit widths to search (subset of 2,4,8,32).")
@click.option("--penalty", type=float, default=1e-3, show_default=True, help="eta: weight of the BitOps term.")
@click.option("--entropy", "entropy_coef", type=float, default=None, help="Initial entropy coefficient (1e-4).")
@click.option("--data", default=None, help="Training images (folders or dataset names); default: "
              "scikit-image's bundled photographs.")
@_datasets_root_option
@click.option("-o", "--output", "out", default="found.json", show_default=True, metavar="PATH")
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--iters", type=click.IntRange(1), default=None, help="Iterations per epoch.")
@click.option("--patch", type=click.IntRange(4), default=None)
@click.option("--batch", type=click.IntRange(1), default=None)
@click.option("--channels", type=click.IntRange(3), default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--mode", type=click.Choice(["san", "shared", "independent"]), default="san", show_default=True)
@click.option("--quick", is_flag=True, help="A small search that finishes in minutes on two CPU cores.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint beside --output.")
@click.option("--latency-table", metavar="PATH", default=None,
              help="Penalise measured latency (bench bitops --table-json) instead of BitOps.")
# latency_table.BACKENDS, spelled out so that the command line starts without importing numpy.
@click.option("--latency-backend", type=click.Choice(["onnxruntime", "litert-xnnpack"]), default="onnxruntime",
              show_default=True, help="Which of the table's backends to penalise.")
@click.option("--anchor", type=click.Choice(["none", "nearest", "bicubic"]), default="none", show_default=True,
              help="Add the upsampled input to the output (basic space; mobile: at LR, before the "
                   "depth-to-space); the found.json keeps it.")
@click.option("--strategy", type=click.Choice(["dnas", "evolution", "bayes", "random"]), default="dnas",
              show_default=True, help="dnas: QuantNAS (the paper). evolution (NSGA-II), bayes (TPE), random: Optuna "
              "trials scored by a one-shot quantized supernet, then the front's best fine-tuned (QAFT).")
@click.option("--trials", type=click.IntRange(1), default=None, help="Sampling strategies: architectures tried [40].")
@click.option("--latency-budget", type=float, default=None,
              help="Sampling strategies: the largest cost allowed: ms with --latency-table, else GBitOps (32x32).")
@click.option("--oneshot-iters", type=click.IntRange(1), default=None, help="Sampling: supernet training steps [2000].")
@click.option("--oneshot-rule", type=click.Choice(["sandwich", "single"]), default="sandwich", show_default=True,
              help="Sampling: each supernet step trains the largest, smallest and two random paths (seed 004's "
                   "sandwich rule, distilled from the largest) or one random path.")
@click.option("--estimate", type=click.Choice(["train", "finetune", "recalibrate"]), default="train",
              show_default=True, help="Sampling: how a trial's PSNR is estimated: trained briefly from initialised "
              "weights (no supernet; ranks best, see benchmarks/results/oneshot_rules.md), the one-shot supernet's "
              "weights fine-tuned briefly, or only recalibrated (seed 004).")
@click.option("--estimate-iters", type=click.IntRange(1), default=None,
              help="Sampling: training steps of each trial's estimate (train, finetune) [300].")
@click.option("--top", type=click.IntRange(1), default=None, help="Sampling: front candidates fine-tuned [3].")
@click.option("--qaft-iters", type=click.IntRange(1), default=None,
              help="Sampling: fine-tune steps each [200; with --estimate train: twice the estimate's].")
@click.option("--val", default=None, metavar="DATA",
              help="Sampling: images the candidates are scored on (default: four of the search images).")
@click.option("--latency-live", metavar="RUNTIME", default=None,
              help="Sampling: measure each candidate's latency in this runtime (onnxruntime, litert-xnnpack, "
                   "litert-builtin, openvino, ...) instead of a table: exported with initialised weights, timed.")
@click.option("--latency-target", metavar="aarch64[:CPU]", default=None,
              help="Sampling, with --latency-live: time there (emulated under qemu: `qnas-deploy target setup`).")
@click.option("--latency-size", callback=lambda c, p, v: _parse_size(v), default="128x128", show_default=True,
              metavar="HxW", help="Sampling, with --latency-live: the LR size timed.")
@click.option("--widths", "widths_list", metavar="all|LIST", default=None,
              help="Sampling: also search each free layer's width ('all': the space's choices, or a list like "
                   "16,32,48); found.json version 2.")
def search(space, bits, penalty, entropy_coef, data, datasets_root, out, epochs, iters, patch, batch, channels,
           seed, device, mode, quick, resume, latency_table, latency_backend, anchor, strategy, trials,
           latency_budget, oneshot_iters, oneshot_rule, estimate, estimate_iters, top, qaft_iters, val, latency_live,
           latency_target, latency_size, widths_list) -> None:
    """Architecture search -> found.json: QuantNAS DNAS (SAN, BitMixer, entropy, BitOps or
    measured-latency penalty), or evolutionary / Bayesian / random sampling on Optuna."""
    from .errors import BadInput
    from .search import SearchConfig, embedded_pairs
    from .search import search as run_search
    from .search.run import output_paths

    try:
        bit_list = tuple(int(b) for b in bits.split(",") if b)
    except ValueError:
        raise BadInput(f"--bits must be comma-separated integers, got {bits!r}") from None
    if strategy != "dnas":
        return _sampling_search(space, bit_list, data, datasets_root, out, patch, batch, channels, seed, quick,
                                latency_table, latency_backend, anchor, strategy, trials, latency_budget,
                                (oneshot_iters, oneshot_rule), (estimate, estimate_iters), top, qaft_iters, val,
                                _widths(widths_list, space),
                                (latency_live, latency_target, latency_size))
    if latency_live or latency_target:
        raise BadInput("--latency-live: DNAS penalises a latency table (--latency-table); live measurement is for "
                       "--strategy evolution, bayes or random")
    if widths_list is not None:
        raise BadInput("--widths: DNAS searches the space's fixed widths; use --strategy evolution, bayes or random")
    check_writable(*output_paths(out))
    kw = dict(space=space, bits=bit_list, mode=mode, penalty=penalty, entropy=entropy_coef, epochs=epochs,
              iters=iters, patch=patch, batch=batch, channels=channels, seed=seed, data=data or "embedded",
              latency_table=latency_table, latency_backend=latency_backend, anchor=anchor)
    kw = {k: v for k, v in kw.items() if v is not None}
    cfg = SearchConfig.quick(**kw) if quick else SearchConfig(**kw)
    if data:
        from .data import load_pairs

        pairs = load_pairs(data, cfg.scale, datasets_root, training=True)
    else:
        pairs = embedded_pairs(cfg.scale)
    r = run_search(cfg, pairs, out, resume=resume, device=_device(device),
                   log=lambda m: click.echo(m, err=True))
    arch = ", ".join(f"{l.name}={l.op}@{l.w_bits}" for l in r.spec.layers)
    click.echo(f"wrote {out} ({r.seconds:.0f} s): {arch}; BitOps(32x32) {r.spec.cost['bitops_32x32']:.3g}",
               err=True)


def _sampling_search(space, bits, data, datasets_root, out, patch, batch, channels, seed, quick, latency_table,
                     latency_backend, anchor, strategy, trials, budget, oneshot, estimate, top, qaft_iters, val,
                     widths, live) -> None:
    from .data import load_pairs
    from .search import embedded_pairs
    from .search.config import QUICK_CHANNELS
    from .search.oneshot import OneShotConfig, estimator
    from .search.sampling import SamplingConfig, paths, sampling_search

    check_writable(out, *(v for k, v in paths(out).items() if k != "front"))
    q = quick
    oc = OneShotConfig(space=space, bits=bits, channels=channels or (QUICK_CHANNELS.get(space, 12) if q else None),
                       blocks=2 if q else None, anchor=anchor, widths=widths,
                       iters=oneshot[0] or (100 if q else 2000), rule=oneshot[1],
                       batch=batch or (4 if q else 16), patch=patch or (16 if q else 32), seed=seed)
    name, iters = estimate
    est = estimator(name, iters if name == "recalibrate" else iters or (10 if q else 300), oc.batch, oc.patch)
    if oneshot[0] is not None and not est.needs_supernet:
        click.echo("--oneshot-iters: ignored; --estimate train trains no supernet", err=True)
    if qaft_iters is None:
        qaft_iters = 2 * est.iters if est.start == "initialised" else (20 if q else 200)
    cfg = SamplingConfig(strategy=strategy, trials=trials or (8 if q else 40), oneshot=oc, estimate=est,
                         latency_table=latency_table, latency_backend=latency_backend, latency_budget=budget,
                         top=top or (2 if q else 3), qaft_iters=qaft_iters, seed=seed, latency_live=live[0],
                         latency_target=live[1], latency_size=live[2])
    pairs = load_pairs(data, 4, datasets_root, training=True) if data else embedded_pairs(4)
    val_pairs = load_pairs(val, 4, datasets_root, training=False) if val else pairs[:4]
    r = sampling_search(cfg, pairs, val_pairs, out, log=lambda m: click.echo(m, err=True))
    b = r["best"]
    click.echo(f"wrote {out} ({r['wall_s']:.0f} s): trial {b['trial']}, PSNR {b['qaft_psnr_db']:.2f} dB after "
               f"fine-tuning (estimate {b['estimated_psnr_db']:.2f}), cost {b['cost']:.3g} {r['cost_unit']}; "
               f"front in {paths(out)['front']}", err=True)


@cli.command()
@click.option("-o", "--output", "out", required=True, metavar="DIR", help="Run folder (run again to resume).")
@_space_option
@click.option("--penalties", default="1e-4,1e-3", show_default=True, help="Comma-separated BitOps penalties (eta).")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds.")
@click.option("--bit-sets", default="4,8", show_default=True, help="Bit sets separated by ';', e.g. '4,8;2,4,8'.")
@click.option("--quick/--full", default=True, show_default=True, help="Quick searches (minutes on two cores) or full ones.")
@click.option("--search-epochs", type=click.IntRange(1), default=None)
@click.option("--search-iters", type=click.IntRange(1), default=None)
@click.option("--search-batch", type=click.IntRange(1), default=None)
@click.option("--search-patch", type=click.IntRange(4), default=None)
@click.option("--channels", type=click.IntRange(3), default=None, help="Supernet width (default: the space's, or quick's).")
@click.option("--blocks", type=click.IntRange(1), default=None)
@click.option("--anchor", type=click.Choice(["none", "nearest", "bicubic"]), default="none", show_default=True)
@click.option("--data", default=None, help="Search and training images (default: scikit-image's bundled photographs).")
@click.option("--val", default=None, metavar="DATA", help="Sets each trained model is scored on (e.g. Set5).")
@_datasets_root_option
@click.option("--train-epochs", type=click.IntRange(0), default=1, show_default=True, help="0: no training.")
@click.option("--train-iters", type=click.IntRange(1), default=50, show_default=True)
@click.option("--train-batch", type=click.IntRange(1), default=None)
@click.option("--train-patch", type=click.IntRange(4), default=None)
@click.option("--formats", default="onnx", show_default=True, help="Export formats per trial: onnx,tflite,ort.")
@click.option("--parallel", type=click.IntRange(1), default=2, show_default=True,
              help="Trials at once on the local Ray (ignored with --address: the cluster's resources decide).")
@click.option("--cpus-per-trial", type=click.IntRange(1), default=1, show_default=True)
@click.option("--gpus-per-trial", type=float, default=0, show_default=True)
@click.option("--retries", type=click.IntRange(0), default=2, show_default=True,
              help="Times Ray restarts a trial whose worker died; it continues from its checkpoints.")
@click.option("--address", default=None, help="Join a running Ray cluster ('auto', or HOST:PORT) instead of a local one.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (with --gpus-per-trial).")
@click.option("--no-progress", is_flag=True)
def sweep(out, space, penalties, seeds, bit_sets, quick, search_epochs, search_iters, search_batch, search_patch,
          channels, blocks, anchor, data, val,
          datasets_root, train_epochs, train_iters, train_batch, train_patch, formats, parallel, cpus_per_trial,
          gpus_per_trial, retries, address, device, no_progress) -> None:
    """A grid of searches (penalties x seeds x bit sets), each trained and exported, as Ray tasks."""
    from .errors import BadInput
    from .sweep import SweepConfig, sweep as run_sweep

    try:
        cfg = SweepConfig(space=space, penalties=tuple(float(v) for v in penalties.split(",") if v),
                          seeds=tuple(int(v) for v in seeds.split(",") if v),
                          bit_sets=tuple(tuple(int(b) for b in g.split(",") if b) for g in bit_sets.split(";") if g),
                          quick=quick, data=data, val=val, train_epochs=train_epochs, train_iters=train_iters,
                          search={k: v for k, v in dict(epochs=search_epochs, iters=search_iters, batch=search_batch,
                                                        patch=search_patch, channels=channels, blocks=blocks,
                                                        anchor=anchor).items() if v is not None},
                          train={k: v for k, v in dict(batch=train_batch, patch=train_patch).items() if v is not None},
                          formats=tuple(f for f in formats.split(",") if f))
    except ValueError as e:
        raise BadInput(f"sweep: bad number in --penalties, --seeds or --bit-sets ({e})") from None
    s = run_sweep(cfg, out, parallel, cpus_per_trial, gpus_per_trial, retries, address, datasets_root,
                  _device(device), progress=not no_progress, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {out}/sweep.md: {len(s['trials'])} trials, {len(s['failed'])} failed, "
               f"{s['wall_s']:.0f} s", err=True)
    if s["failed"]:
        raise SystemExit(1)


@cli.command()
@click.option("-o", "--output", "out", default="qnas-demo", show_default=True, metavar="DIR", help="Run folder.")
@_datasets_root_option
@click.option("--resume", is_flag=True, help="Continue a run folder, reusing the steps already done.")
@click.option("--anchor", type=click.Choice(["none", "nearest", "bicubic"]), default="bicubic", show_default=True,
              help="Input anchor of the searched Basic net ('none': the paper's network).")
def demo(out: str, datasets_root: str | None, resume: bool, anchor: str) -> None:
    """The whole product in minutes: quick search, short training, ONNX + TFLite export,
    parity and latency, and a one-page report (DIR/REPORT.md)."""
    from ._io import check_folder
    from .demo import run_demo

    check_folder(out)
    s = run_demo(out, datasets_root, resume, anchor=anchor, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {out}/REPORT.md: bicubic {s['bicubic_psnr_db']:.2f} dB, "
               f"model {s['parity']['pytorch']['mean'][s['validation']]['psnr_db']:.2f} dB on {s['validation']}",
               err=True)


def _int_list(value: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        from .errors import BadInput

        raise BadInput(f"{what}: expected comma-separated positive integers such as 1,2, got {value!r}")
    return out


def _widths(value: str | None, space: str) -> tuple[int, ...]:
    """``--widths``: nothing, ``all`` (the space's choices) or a list of channel counts."""
    from .spaces import get_space

    if value is None:
        return ()
    choices = get_space(space).width_choices
    if not choices:
        raise click.UsageError(f"--widths: the {space} space has no layer widths")
    return tuple(choices) if value == "all" else tuple(_int_list(value, "--widths"))


def _kernels(value: str) -> tuple[str, ...]:
    ks = tuple(k for k in value.split(",") if k)
    known = ("xnnpack", "builtin", "builtin-ref")  # runtimes.litert.KERNELS (not imported: no numpy at start)
    if not ks or any(k not in known for k in ks):
        from .errors import BadInput

        raise BadInput(f"--tflite-kernels: expected a comma-separated subset of {', '.join(known)}, got {value!r}")
    return ks


def _write_outputs(result: dict, json_path: str | None, md_path: str | None, md: str) -> None:
    from ._io import write_text

    if json_path:
        write_json(json_path, result)
    if md_path:
        write_text(md_path, md)
    if json_path != "-":
        click.echo(md, nl=False)


_kernels_option = click.option("--tflite-kernels", default="xnnpack,builtin", show_default=True,
                               help="LiteRT kernel sets to run .tflite files with (xnnpack, builtin, builtin-ref: "
                                    "the reference kernels).")

# The runtimes of .onnx files (``runtimes.RUNTIMES``), spelled out so that the command line
# starts without importing them.
ONNX_RUNTIMES = ("onnxruntime", "onnxruntime-nchw", "openvino")
_onnx_option = click.option("--onnx-runtimes", default="onnxruntime", show_default=True,
                            help="Runtimes to run .onnx files with (onnxruntime; onnxruntime-nchw: without its "
                                 "NHWC layout transform; openvino).")


def _onnx_runtimes(value: str) -> tuple[str, ...]:
    from .errors import BadInput

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in ONNX_RUNTIMES]
    if bad or not names:
        raise BadInput(f"--onnx-runtimes: unknown runtime {', '.join(bad) or '(none)'} "
                       f"(choose from {', '.join(ONNX_RUNTIMES)})")
    return names


_machine_option = click.option(
    "--target", "machine", metavar="aarch64[:CPU]", default=None,
    help="Run the files on another CPU, emulated: aarch64 with a CPU model (cortex-a53, cortex-a72, cortex-a76, "
         "neoverse-n1 (default), max); set up once with 'qnas-deploy target setup aarch64'. Default: this machine.")


@cli.group()
def bench() -> None:
    """Parity and latency of exported files."""


@bench.command("parity")
@click.argument("checkpoint")
@click.argument("files", nargs=-1, required=True)
@_data_option("Set5,Set14", "Benchmark sets.")
@_datasets_root_option
@click.option("--tolerance-db", type=float, default=0.01, show_default=True,
              help="Largest |PSNR difference| to the PyTorch model allowed per image.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Runtime threads.")
@_kernels_option
@click.option("--json", "json_path", metavar="PATH", help="Write every number as JSON ('-' for stdout).")
@click.option("--md", "md_path", metavar="PATH", help="Write the Markdown table.")
@click.option("--diff-png", metavar="PATH", help="Difference map of the worst image (default: none).")
@_onnx_option
@_machine_option
def bench_parity(checkpoint, files, data, datasets_root, tolerance_db, threads, tflite_kernels, json_path, md_path,
                 diff_png, onnx_runtimes, machine) -> None:
    """Run every image through CHECKPOINT (PyTorch; or a zoo name: its shipped weights), the
    numpy integer reference and FILES.

    Exits 1 when a file misses --tolerance-db on some image.
    """
    from .bench.parity import markdown, parity
    from .checkpoint import load_checkpoint
    from .data import benchmark_pairs, resolve_dataset
    from .errors import QnasError

    from .zoo import model_file

    check_writable(json_path, md_path, diff_png)
    checkpoint = model_file(checkpoint)
    scale = load_checkpoint(checkpoint).spec.scale
    sets = {s: benchmark_pairs(resolve_dataset(s, datasets_root), scale) for s in data.split(",") if s}
    result = parity(checkpoint, list(files), sets, threads, tolerance_db, _kernels(tflite_kernels),
                    diff_png=diff_png, machine=machine, onnx_runtimes=_onnx_runtimes(onnx_runtimes))
    _write_outputs(result.to_dict(), json_path, md_path, markdown(result))
    if not result.passed:
        failed = [k for k, v in result.files.items() if v.passed is False]
        raise QnasError(f"parity: {', '.join(failed)} missed {tolerance_db} dB")


@bench.command("latency")
@click.argument("files", nargs=-1, required=True)
@_size_option("180x320")
@click.option("--threads", "threads_list", default="1,2", show_default=True, help="Thread counts to measure.")
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True)
@_kernels_option
@click.option("--json", "json_path", metavar="PATH", help="Write every number as JSON ('-' for stdout).")
@click.option("--md", "md_path", metavar="PATH", help="Write the Markdown table.")
@_onnx_option
@_machine_option
def bench_latency(files, size, threads_list, runs, warmup, tflite_kernels, json_path, md_path, onnx_runtimes,
                  machine) -> None:
    """Median, p10/p90 latency and peak memory of FILES per backend and thread count
    (with --target: an emulator's timings, labelled so, not a device's)."""
    from .bench.latency import latency, markdown

    check_writable(json_path, md_path)
    result = latency(list(files), size, _int_list(threads_list, "--threads"), runs, warmup, _kernels(tflite_kernels),
                     machine=machine, onnx_runtimes=_onnx_runtimes(onnx_runtimes))
    _write_outputs(result.to_dict(), json_path, md_path, markdown(result))


@cli.group()
def target() -> None:
    """Other machines to run exported files on (emulated aarch64)."""


@target.command("setup")
@click.argument("machine", type=click.Choice(["aarch64"]))
def target_setup(machine: str) -> None:
    """Make the aarch64 environment once: an arm64 Debian root (mmdebstrap), the aarch64
    wheels of numpy, onnxruntime, ai-edge-litert and tflite at this machine's versions, run
    by qemu-aarch64-static. Cached in $QNAS_DEPLOY_CACHE (default ~/.cache/qnas-deploy).
    Needs: apt-get install qemu-user-static mmdebstrap."""
    from .emulation import aarch64

    aarch64.setup(log=lambda m: click.echo(m, err=True))


@target.command("list")
def target_list() -> None:
    """The emulated CPU models, and whether the environment is set up."""
    from .emulation import aarch64
    from .errors import QnasError

    try:
        env = aarch64.load()
        click.echo(f"aarch64 environment: {env.folder} (qemu {env.info['qemu']}, "
                   + ", ".join(f"{k} {v}" for k, v in env.info["versions"].items()) + ")")
    except QnasError as e:
        env = None
        click.echo(f"aarch64 environment: not set up ({e})")
    for cpu in aarch64.CPUS.values():
        probed = env.info["cpus"].get(cpu.name, {}) if env else {}
        midr = f" MIDR {probed['midr']}" if probed else ""
        default = " (default)" if cpu.name == aarch64.DEFAULT_CPU else ""
        click.echo(f"  aarch64:{cpu.name}{default}: {cpu.features}{midr}")


@bench.command("bitops")
@_space_option
@click.option("--samples", type=click.IntRange(1), default=30, show_default=True)
@_size_option("128x128")
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", metavar="PATH", help="Write every number as JSON ('-' for stdout).")
@click.option("--md", "md_path", metavar="PATH", help="Write the Markdown table.")
@click.option("--plot", "plot_path", metavar="PATH", help="BitOps vs latency (and table) scatter plots (PNG).")
@click.option("--bits", "bits_list", default="2,4,8", show_default=True,
              help="Bit widths the random architectures (and the table) draw from.")
@click.option("--channels", type=click.IntRange(3), default=None, help="Network width (default: the space's).")
@click.option("--blocks", type=click.IntRange(1), default=None, help="Blocks (default: the space's).")
@click.option("--table/--no-table", "with_table", default=True, show_default=True,
              help="Also build the per-layer latency table and judge it on the sampled architectures.")
@click.option("--table-json", "table_path", metavar="PATH", help="Save the latency table (JSON) for the search.")
@click.option("--fit", type=click.IntRange(1), default=3, show_default=True,
              help="Other random architectures that fix the table's constant part.")
@click.option("--table-runs", type=click.IntRange(1), default=10, show_default=True,
              help="Runs per layer candidate.")
@click.option("--widths", "widths_list", metavar="all|LIST", default=None,
              help="Draw each free layer's width too ('all': the space's choices, or a list like 16,32), "
                   "and measure the table at those widths.")
@click.option("--anchor", type=click.Choice(["none", "nearest", "bicubic"]), default="none", show_default=True,
              help="The architectures' anchor (in the table's fixed part: a table predicts that anchor only).")
def bench_bitops(space, samples, size, runs, threads, seed, json_path, md_path, plot_path, bits_list, channels,
                 blocks, with_table, table_path, fit, table_runs, widths_list, anchor) -> None:
    """Kendall tau and Pearson r between BitOps and measured latency of random architectures
    (onnxruntime and LiteRT + XNNPACK, initialised weights), and of an FBNet-style per-layer
    latency table measured on the same machine."""
    from .bench.bitops import bitops_vs_latency, markdown, plot

    if table_path and not with_table:
        raise click.UsageError("--table-json needs the table (drop --no-table)")
    check_writable(json_path, md_path, plot_path, table_path)
    bits = tuple(_int_list(bits_list, "--bits"))
    if not set(bits) <= {2, 4, 8}:
        raise click.UsageError(f"--bits {bits_list}: choose from 2, 4, 8 (the integer exporters' widths)")
    result = bitops_vs_latency(space, samples, size, runs, threads=threads, seed=seed, table=with_table, fit=fit,
                               table_runs=table_runs, bits=bits, channels=channels, blocks=blocks,
                               widths=_widths(widths_list, space), anchor=anchor)
    if table_path:
        write_json(table_path, result["table"])
    if plot_path:
        plot(result, plot_path)
    _write_outputs(result, json_path, md_path, markdown(result))


# What to install for a module a command imports: the import name is not always the pip name.
_PIP_NAMES = {"torch": "torch", "PIL": "pillow", "skimage": "scikit-image", "matplotlib": "matplotlib",
              "onnx": "onnx", "onnxsim": "onnxsim", "scipy": "scipy", "jsonschema": "jsonschema"}


def _command(argv: list[str]) -> str:
    """``qnas-deploy`` and the (sub)commands named in ``argv``, for messages."""
    words, group = ["qnas-deploy"], cli
    for a in argv:
        sub = getattr(group, "commands", {}).get(a)
        if sub is None:
            if not a.startswith("-"):
                break
            continue
        words.append(a)
        group = sub
    return " ".join(words)


def _usage_error(e: click.UsageError, argv: list[str]) -> str:
    """Click's usage error as one line: its message and where the usage is, not the block
    (usage, hint, blank line, message) click prints."""
    where = e.ctx.command_path if e.ctx is not None else _command(argv)
    return f"{' '.join(e.format_message().split()).rstrip('.')} (see {where} --help)"


def _missing_module(e: ModuleNotFoundError, argv: list[str]) -> str | None:
    """One line naming what a command needs where a dependency is not installed (the
    board install has no PyTorch); ``None`` for a module of this package (a bug)."""
    top = (e.name or "").split(".")[0]
    if not top or top == "qnas_deploy":
        return None
    pip = _PIP_NAMES.get(top, top)
    needs = "PyTorch" if top == "torch" else f"the Python package {pip}"
    hint = " (an install without it runs `bench latency` only)" if top == "torch" else ""
    return f"{_command(argv)} needs {needs}, which is not installed here: python3 -m pip install {pip}{hint}"


def _os_error(e: OSError) -> str | None:
    """A path the user gave that cannot be written (or read), as one line; ``None`` otherwise."""
    import errno

    if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not e.filename:
        return None
    return f"cannot use {str(e.filename)!r}: {e.strerror}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: turns errors into one line and an exit code."""
    from .errors import QnasError

    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        cli.main(args=argv, prog_name="qnas-deploy", standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.NoArgsIsHelpError as e:  # the bare command: its help is the answer
        e.show()
        return e.exit_code
    except click.UsageError as e:
        click.echo(f"error: {_usage_error(e, argv)}", err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        return e.exit_code
    except click.Abort:
        click.echo("error: interrupted", err=True)
        return 130
    except QnasError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    except ModuleNotFoundError as e:
        line = None if debug else _missing_module(e, argv)
        if line is None:
            return _unexpected(e, debug)
        click.echo(f"error: {line}", err=True)
        return 2
    except OSError as e:
        line = None if debug else _os_error(e)
        if line is None:
            return _unexpected(e, debug)
        click.echo(f"error: {line}", err=True)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback behind --debug
        return _unexpected(e, debug)


def _unexpected(e: Exception, debug: bool) -> int:
    if debug:
        raise e
    # Some modules name their exception plain "error" (struct.error): qualify it, or the
    # line reads "error: error: ...".
    kind = type(e).__name__ if type(e).__name__ != "error" else f"{type(e).__module__}.error"
    text = " ".join(str(e).split())
    click.echo(f"error: {kind}: {text} (rerun with --debug for the traceback)", err=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
