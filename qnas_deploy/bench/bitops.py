"""``qnas-deploy bench bitops``: does BitOps, the search's cost, rank architectures the way
measured latency does?

Random architectures of a space (a random operation from the quantized search's set and a
random bit width per searchable layer) are exported with initialised weights, timed per
backend on one LR size, and compared with their BitOps by Kendall's tau and Pearson's r,
and with their MACs (what 8-bit-container runtimes execute). The FBNet-style per-layer
latency table is not built yet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInput


def random_spec(space: str, rng: np.random.Generator, bits=(2, 4, 8), index: int = 0):
    from ..spaces import get_space
    from ..spec import ArchSpec, LayerSpec

    sp = get_space(space)
    slots = sp.layout(sp.default_channels, sp.default_blocks, 4)
    layers = []
    for s in slots:
        ops = sp.ops_for(s.role, "small")
        b = int(rng.choice(bits))
        layers.append(LayerSpec(s.name, str(ops[rng.integers(len(ops))]), b, b))
    return ArchSpec(space=space, scale=4, channels=sp.default_channels, blocks=sp.default_blocks,
                    layers=tuple(layers), name=f"{space}_random_{index}")


def bitops_vs_latency(space: str, samples: int, size: tuple[int, int], runs: int = 5, warmup: int = 1,
                      threads: int = 1, seed: int = 0, work: str | Path | None = None, progress: bool = True) -> dict:
    import tempfile

    from tqdm import tqdm

    from ..cost import summary
    from ..exporters.export import calibration_batches
    from ..exporters.lower import lower
    from ..exporters.onnx import to_onnx
    from ..exporters.tflite import to_tflite
    from ..calibrate import calibrate
    from ..spaces import build_model
    from .latency import measure
    import torch

    if samples < 3:
        raise BadInput(f"--samples {samples}: need at least 3 architectures for a rank correlation")
    work = Path(work or tempfile.mkdtemp(prefix="qnas-bitops-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in tqdm(range(samples), desc=f"bitops {space}", disable=not progress, leave=False):
        spec = random_spec(space, rng, index=i)
        torch.manual_seed(i)
        model = build_model(spec)
        calibrate(model, calibration_batches(spec, None, None))
        graph = lower(model.eval(), "static" if spec.adq else None)
        onnx_path, tfl_path = work / f"{spec.name}.onnx", work / f"{spec.name}.tflite"
        onnx_path.write_bytes(to_onnx(graph).SerializeToString())
        tfl_path.write_bytes(to_tflite(graph, input_size=size))
        cost = summary(spec)
        row = {"name": spec.name, "bitops_32x32": cost["bitops_32x32"], "macs_32x32": cost["macs_32x32"],
               "layers": [[l.name, l.op, l.w_bits] for l in spec.layers]}
        for path, backend in ((onnx_path, "onnxruntime"), (tfl_path, "litert_xnnpack")):
            row[f"{backend}_ms"] = measure(str(path), backend, size, threads, runs, warmup)["median_ms"]
        rows.append(row)
    return {"space": space, "samples": samples, "size": f"{size[0]}x{size[1]}", "threads": threads, "runs": runs,
            "seed": seed, "rows": rows, "correlation": correlations(rows)}


def correlations(rows: list[dict]) -> dict:
    """Per backend: tau and r of latency against BitOps, and against MACs (bit widths
    ignored: the runtimes hold sub-8-bit tensors in 8-bit containers)."""
    from scipy import stats

    bitops = np.array([r["bitops_32x32"] for r in rows])
    macs = np.array([r["macs_32x32"] for r in rows])
    corr = {}
    for backend in ("onnxruntime", "litert_xnnpack"):
        lat = np.array([r[f"{backend}_ms"] for r in rows])
        corr[backend] = {"kendall_tau": float(stats.kendalltau(bitops, lat).statistic),
                         "pearson_r": float(stats.pearsonr(bitops, lat).statistic),
                         "macs_kendall_tau": float(stats.kendalltau(macs, lat).statistic),
                         "macs_pearson_r": float(stats.pearsonr(macs, lat).statistic)}
    return corr


def plot(result: dict, out: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    b = np.array([r["bitops_32x32"] for r in result["rows"]])
    for ax, backend in zip(axes, ("onnxruntime", "litert_xnnpack")):
        lat = [r[f"{backend}_ms"] for r in result["rows"]]
        c = result["correlation"][backend]
        ax.scatter(b / 1e9, lat, s=12)
        ax.set_xlabel("BitOps at 32x32 (G)")
        ax.set_ylabel(f"{backend} latency at {result['size']} (ms)")
        ax.set_title(f"tau {c['kendall_tau']:.2f}, r {c['pearson_r']:.2f}", fontsize=9)
    fig.suptitle(f"{result['space']}: {result['samples']} random architectures", fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = [f"BitOps against measured latency: {result['space']} space, {result['samples']} random architectures "
             f"(seed {result['seed']}), LR {result['size']}, {result['threads']} thread(s), median of "
             f"{result['runs']} runs.", "",
             "| backend | tau (BitOps) | r (BitOps) | tau (MACs) | r (MACs) |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['kendall_tau']:.3f} | {v['pearson_r']:.3f} | {v['macs_kendall_tau']:.3f} | "
              f"{v['macs_pearson_r']:.3f} |" for k, v in result["correlation"].items()]
    return "\n".join(lines) + "\n"
