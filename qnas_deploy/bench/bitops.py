"""``qnas-deploy bench bitops``: does BitOps, the search's cost, rank architectures the way
measured latency does?

Random architectures of a space (a random operation from the quantized search's set and a
random bit width per searchable layer) are exported with initialised weights, timed per
backend on one LR size, and compared with their BitOps by Kendall's tau and Pearson's r,
and with their MACs (what 8-bit-container runtimes execute). The FBNet-style per-layer
latency table is built beside them (``latency_table.py``), its constant part fitted and its
predictions (``cost/latency.py``) judged on the same architectures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInput
from .latency_table import BACKENDS


def random_spec(space: str, rng: np.random.Generator, bits=(2, 4, 8), index: int = 0, channels: int | None = None,
                blocks: int | None = None, widths=(), anchor: str = "none"):
    """A random architecture: per layer an operation of the quantized set, a bit width and,
    with ``widths`` (``Space.width_problem`` passed), a width for each free layer."""
    from ..spaces import get_space
    from ..spec import ArchSpec, LayerSpec

    sp = get_space(space)
    channels, blocks = channels or sp.default_channels, blocks or sp.default_blocks
    slots = sp.layout(channels, blocks, 4)
    layers = []
    for s in slots:
        ops = sp.ops_for(s.role, "small")
        b = int(rng.choice(bits))
        w = int(rng.choice(widths)) if widths and s.free_width else None
        layers.append(LayerSpec(s.name, str(ops[rng.integers(len(ops))]), b, b, w))
    return ArchSpec(space=space, scale=4, channels=channels, blocks=blocks, adq=sp.has_adq, anchor=anchor,
                    layers=tuple(layers), name=f"{space}_random_{index}")


def timing_jobs(onnx_path, tflite_path, size: tuple[int, int]) -> list:
    """One architecture's round-robin jobs (``runtimes.timing``): its files in the table's
    runtimes (``latency_table.BACKENDS``), in that order, on an LR input of ``size``."""
    from ..runtimes import RUNTIMES
    from ..runtimes.timing import Job

    paths = {".onnx": str(onnx_path), ".tflite": str(tflite_path)}
    return [Job(paths[rt.suffix], rt.name, rt.input_shape(*size)) for rt in (RUNTIMES[b] for b in BACKENDS)]


def _measure_archs(specs, size, runs, warmup, threads, work: Path, progress: bool = False, desc: str = "") -> list[dict]:
    """Export every spec, then time all files together, round robin, in one child process
    (``runtimes.timing``): every architecture sees the same machine."""
    from tqdm import tqdm

    from ..runtimes.timing import round_robin

    rows, jobs = [], []
    for spec in tqdm(specs, desc=desc, disable=not progress, leave=False):
        row, onnx_path, tfl_path = export_architecture(spec, size, work)
        rows.append(row)
        jobs += timing_jobs(onnx_path, tfl_path, size)
    times = round_robin(jobs, threads, runs, warmup, progress and f"{desc.split(':')[0]}: time").timings
    for i, row in enumerate(rows):
        for j, backend in enumerate(BACKENDS):
            row[f"{backend}_ms"] = times[len(BACKENDS) * i + j].median_ms
    return rows


def export_architecture(spec, size, work: Path, formats=("onnx", "tflite")):
    """``spec`` with initialised weights, calibrated, lowered and written in ``formats`` by
    the export pipeline (metadata and the runtimes' checks included; onnxsim off, as the
    architectures were always timed). Returns the row and the ONNX and TFLite paths (None
    for a format not written)."""
    from ..cost import summary
    from ..exporters.export import ExportOptions, lower, metadata, prepare, write
    from ..spaces import get_space

    p = prepare(spec, log=lambda _: None)
    paths = dict.fromkeys(("onnx", "tflite"))
    for fmt in formats:
        opts = ExportOptions(format=fmt, input_size=size, simplify=False)
        paths[fmt] = work / f"{spec.name}.{fmt}"
        write(lower(p.model, opts), paths[fmt], opts, metadata(p, opts))
    cost = summary(spec)
    row = {"name": spec.name, "bitops_32x32": cost["bitops_32x32"], "macs_32x32": cost["macs_32x32"],
           "layers": [[l.name, l.op, l.w_bits, l.a_bits, s.c_in, s.c_out]
                      for l, s in zip(spec.layers, get_space(spec.space).slots_of(spec))]}
    return row, paths["onnx"], paths["tflite"]


def bitops_vs_latency(space: str, samples: int, size: tuple[int, int], runs: int = 5, warmup: int = 1,
                      threads: int = 1, seed: int = 0, work: str | Path | None = None, progress: bool = True,
                      table: bool = True, fit: int = 3, table_runs: int = 10, bits=(2, 4, 8),
                      channels: int | None = None, blocks: int | None = None, widths=(), anchor: str = "none") -> dict:
    """Time ``samples`` random architectures; with ``table``, also build the per-layer latency
    table, fix its constant part on ``fit`` other random architectures, and judge it on the
    ``samples`` (held out: the table never saw them). ``widths``: the free layers' widths
    are drawn from these too, and the table covers them. ``anchor``: the architectures'
    anchor (its cost is in the table's fixed part, so a table serves one anchor)."""
    import tempfile

    from ..cost.latency import evaluate, fit_fixed
    from .latency_table import build_table

    from ..spaces import get_space

    why = get_space(space).width_problem(widths, channels, blocks)
    if why:
        raise BadInput(f"--widths: {why}")
    if samples < 3:
        raise BadInput(f"--samples {samples}: need at least 3 architectures for a rank correlation")
    if table and fit < 1:
        raise BadInput(f"--fit {fit}: the table needs at least 1 architecture to fix its constant part")
    work = Path(work or tempfile.mkdtemp(prefix="qnas-bitops-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = [random_spec(space, rng, bits, i, channels, blocks, widths, anchor) for i in range(samples)]
    fit_rng = np.random.default_rng([seed, 1])  # another stream: the fit architectures are not held-out ones
    fit_specs = [random_spec(space, fit_rng, bits, samples + i, channels, blocks, widths, anchor)
                 for i in range(fit if table else 0)]
    # Held-out and fit architectures are timed in the same rounds, so that the table's
    # constant part is fixed under the conditions the held-out ones are measured in.
    timed = _measure_archs(specs + fit_specs, size, runs, warmup, threads, work, progress, f"bitops {space}: export")
    rows, fit_rows = timed[:samples], timed[samples:]
    result = {"space": space, "bits": list(bits), "samples": samples, "size": f"{size[0]}x{size[1]}", "threads": threads, "runs": runs,
              "seed": seed, "widths": list(widths), "anchor": anchor, "rows": rows, "correlation": correlations(rows)}
    if table:
        tab = build_table(space, size, bits, threads=threads, runs=table_runs, work=work / "table", progress=progress,
                          channels=channels, blocks=blocks, widths=widths)
        tab["anchor"] = anchor
        fit_fixed(tab, fit_rows)
        result.update(table=tab, fit_rows=fit_rows, table_accuracy=evaluate(tab, rows))
    return result


def correlations(rows: list[dict]) -> dict:
    """Per backend: tau and r of latency against BitOps, and against MACs (bit widths
    ignored: the runtimes hold sub-8-bit tensors in 8-bit containers)."""
    from scipy import stats

    bitops = np.array([r["bitops_32x32"] for r in rows])
    macs = np.array([r["macs_32x32"] for r in rows])
    corr = {}
    for backend in BACKENDS:
        lat = np.array([r[f"{backend}_ms"] for r in rows])
        corr[backend] = {"kendall_tau": float(stats.kendalltau(bitops, lat).statistic),
                         "pearson_r": float(stats.pearsonr(bitops, lat).statistic),
                         "macs_kendall_tau": float(stats.kendalltau(macs, lat).statistic),
                         "macs_pearson_r": float(stats.pearsonr(macs, lat).statistic)}
    return corr


def plot(result: dict, out: str | Path) -> None:
    """BitOps vs latency per backend; with a table, predicted vs measured latency below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    with_table = "table_accuracy" in result
    fig, axes = plt.subplots(2 if with_table else 1, 2, figsize=(9, 7.2 if with_table else 3.6), squeeze=False)
    b = np.array([r["bitops_32x32"] for r in result["rows"]])
    for ax, backend in zip(axes[0], BACKENDS):
        lat = [r[f"{backend}_ms"] for r in result["rows"]]
        c = result["correlation"][backend]
        ax.scatter(b / 1e9, lat, s=12)
        ax.set_xlabel("BitOps at 32x32 (G)")
        ax.set_ylabel(f"{backend} latency at {result['size']} (ms)")
        ax.set_title(f"BitOps: tau {c['kendall_tau']:.2f}, r {c['pearson_r']:.2f}", fontsize=9)
    if with_table:
        for ax, backend in zip(axes[1], BACKENDS):
            meas = np.array([r[f"{backend}_ms"] for r in result["rows"]])
            pred = np.array([r[f"{backend}_predicted_ms"] for r in result["rows"]])
            a = result["table_accuracy"][backend]
            lo, hi = min(meas.min(), pred.min()), max(meas.max(), pred.max())
            ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8)
            ax.scatter(pred, meas, s=12, color="tab:orange")
            ax.set_xlabel("predicted by the latency table (ms)")
            ax.set_ylabel(f"{backend} measured (ms)")
            ax.set_title(f"table: tau {a['kendall_tau']:.2f}, MAPE {100 * a['mape']:.1f}%", fontsize=9)
    fig.suptitle(f"{result['space']}: {result['samples']} random architectures", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [f"BitOps against measured latency: {result['space']} space, {result['samples']} random architectures "
             f"(seed {result['seed']}), LR {result['size']}, {result['threads']} thread(s), median of "
             f"{result['runs']} rounds (each round times every file once, held-out and fit architectures "
             "together).", "",
             "| backend | tau (BitOps) | r (BitOps) | tau (MACs) | r (MACs) |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['kendall_tau']:.3f} | {v['pearson_r']:.3f} | {v['macs_kendall_tau']:.3f} | "
              f"{v['macs_pearson_r']:.3f} |" for k, v in result["correlation"].items()]
    if "table_accuracy" in result:
        t = result["table"]
        lines += ["", f"Per-layer latency table: {len(t['entries'])} layer candidates, each timed alone "
                  f"(median of {t['runs']} round-robin rounds); the constant part fixed on {len(result['fit_rows'])} other "
                  "random architectures; judged on the architectures above (held out).", "",
                  "| backend | fixed part (ms) | tau (table) | r (table) | MAPE |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {t['fixed_ms'][k]:.2f} | {v['kendall_tau']:.3f} | {v['pearson_r']:.3f} | "
                  f"{100 * v['mape']:.1f}% |" for k, v in result["table_accuracy"].items()]
    return "\n".join(lines) + "\n"
