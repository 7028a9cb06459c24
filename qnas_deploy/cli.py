"""The ``qnas-deploy`` command line: option parsing only; the work lives in the library.

Conventions shared by every command: ``--json PATH`` (``-`` for stdout) writes the
machine-readable result; exit 0 on success, 2 on bad input with one line ``error: ...``,
1 on a failure at run time; ``--debug`` shows tracebacks; files are written atomically.
"""
from __future__ import annotations

import sys

import click

from . import __version__
from ._io import write_json


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


def _size_option(default: str):
    return click.option("--size", default=default, show_default=True, metavar="HxW",
                        callback=lambda ctx, p, v: _parse_size(v), help="LR input size.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qnas-deploy")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Quantization-aware NAS for super-resolution, compiled to integer ONNX and TFLite."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


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
def zoo() -> None:
    """List the architectures shipped with the package."""
    from .cost import summary
    from .zoo import load_zoo, names

    for name in names():
        arch = load_zoo(name)
        bitops = (arch.cost or summary(arch))["bitops_32x32"]
        click.echo(f"{name:14s} {arch.space:6s} x{arch.scale}  {bitops / 1e9:8.2f} GBitOps@32x32  "
                   f"{arch.description or ''}")


@cli.command("eval")
@click.argument("model", required=False)
@click.option("--bicubic", is_flag=True, help="Score MATLAB-style bicubic upscaling (the baseline every SR paper prints).")
@click.option("--data", default="Set5,Set14", show_default=True,
              help="Comma-separated dataset folders or names (resolved under --datasets-root).")
@click.option("--datasets-root", metavar="DIR", help="Where dataset names resolve (default: $QNAS_DATASETS, then ../shared/datasets).")
@click.option("--scale", type=click.IntRange(2, 4), default=4, show_default=True, help="Upscaling factor.")
@click.option("--json", "json_path", metavar="PATH", help="Write per-image and mean PSNR/SSIM as JSON ('-' for stdout).")
def eval_cmd(model: str | None, bicubic: bool, data: str, datasets_root: str | None, scale: int,
             json_path: str | None) -> None:
    """Mean and per-image PSNR/SSIM (Y channel, `scale` pixels shaved) on benchmark sets."""
    from .errors import BadInput
    from .evaluate import bicubic_upscaler, evaluate_sets, results_table

    if not bicubic:
        # Scoring trained checkpoints arrives with training (the train issue).
        raise BadInput("eval: only --bicubic is available in this version; give --bicubic")
    if model:
        raise BadInput("eval: give either MODEL or --bicubic, not both")
    sets = [s for s in data.split(",") if s]
    result = evaluate_sets(bicubic_upscaler(scale), sets, scale, datasets_root)
    result["method"] = "bicubic"
    if json_path:
        write_json(json_path, result)
    if json_path != "-":
        click.echo(results_table(result, "bicubic"))


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
    except click.ClickException as e:
        e.show()
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
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback behind --debug
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
