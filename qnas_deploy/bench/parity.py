"""``qnas-deploy bench parity``: does every exported file compute what was trained?

Each image goes through the PyTorch fake-quant model (the model as trained), the numpy
integer reference, and every exported file in every backend it runs in. Two questions
are answered per file:

* quality: PSNR/SSIM and the PSNR difference to the PyTorch model (``--tolerance-db``);
* exactness: the share of uint8 output pixels identical to the numpy reference run in
  the *backend's own* arithmetic (``exporters/reference.py``: onnxruntime, LiteRT with
  XNNPACK, LiteRT builtin) on the machine it runs on. A backend that computes what its
  arithmetic says gives 1.0; anything less is a bug in the writer, the reference or the
  runtime.

``machine="aarch64:CPU"`` runs the files in the aarch64 builds of the runtimes under qemu
(``emulation.aarch64``), every image in one guest process; the references stay here.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BadInput
from ..infer import torch_runner
from ..runtimes import grey_aware
from ..metrics import psnr, ssim
from ..runtimes import Runtime, file_options, runtimes_for


def file_export_options(path: str, options: dict, target: str):
    """The ``ExportOptions`` a file was written with (from its metadata); ``target`` where
    the file does not name its own (files from before targets were recorded)."""
    from ..exporters.options import ExportOptions

    fmt = {".tflite": "tflite", ".ort": "ort"}.get(Path(path).suffix.lower(), "onnx")
    size = tuple(int(v) for v in options.get("input_size", "128x128").split("x"))
    adq = options.get("adq") if options.get("adq") not in (None, "none") else "static"
    return ExportOptions(format=fmt, target=options.get("target", target), adq=adq,
                         int4=options.get("int4", "container"),
                         io=options.get("io", "uint8"), input_size=size)


@dataclass(frozen=True)
class _Run:
    """One exported file in one runtime, as parity runs it."""
    label: str
    path: str
    runtime: Runtime
    options: dict                 # the file's export options
    adq: str | None
    run: Callable | None          # None: the outputs come from the emulated machine


@dataclass
class FileParity:
    """One row of the result: PyTorch, the numpy reference, or a file in a runtime."""
    images: dict                  # "set/image" -> psnr_db, ssim (and, but for PyTorch, the comparisons)
    mean: dict                    # set -> mean psnr_db, ssim
    path: str | None = None
    runtime: str | None = None    # a RUNTIMES name, "numpy" for the reference; None: the PyTorch row
    arithmetic: str | None = None
    machine: str | None = None    # where the runtime ran: "x86_64", "aarch64 cortex-a72 (qemu 7.2 ...)"
    max_abs_delta_psnr_db: float | None = None
    min_identical_pixels: float | None = None
    max_abs_diff: int | None = None
    passed: bool | None = None

    def to_dict(self) -> dict:
        d = {"images": self.images, "mean": self.mean}
        if self.runtime is not None:
            d.update(path=self.path, runtime=self.runtime, arithmetic=self.arithmetic, machine=self.machine,
                     max_abs_delta_psnr_db=self.max_abs_delta_psnr_db, min_identical_pixels=self.min_identical_pixels,
                     max_abs_diff=self.max_abs_diff, passed=self.passed)
        return d


@dataclass
class ParityResult:
    checkpoint: str
    architecture: str
    sets: dict[str, int]          # set -> number of images
    tolerance_db: float
    files: dict[str, FileParity]  # "pytorch", "reference", then one per file and runtime
    passed: bool
    worst: dict | None = None     # the image the diff PNG shows
    machine: str = "x86_64"       # where the files ran

    def to_dict(self) -> dict:
        d = {"checkpoint": self.checkpoint, "architecture": self.architecture, "sets": self.sets,
             "tolerance_db": self.tolerance_db, "files": {k: v.to_dict() for k, v in self.files.items()},
             "passed": self.passed, "machine": self.machine}
        if self.worst is not None:
            d["worst"] = self.worst
        return d


def _arithmetic(b: _Run, machine: str | None) -> str:
    from ..exporters import targets

    return targets.get(b.runtime.target).arithmetic_on(machine)


def _runs_of(path: str, options: dict, threads: int | None, tflite_kernels, onnx_runtimes,
             where: str = "") -> list[_Run]:
    adq = options.get("adq") if options.get("adq") not in (None, "none") else None
    rts = runtimes_for(path, tflite_kernels, onnx_runtimes)
    if where:  # emulated: opened there, once, for every image
        return [_Run(f"{Path(path).name} {rt.label} @ {where}", path, rt, options, adq, None) for rt in rts]
    return [_Run(f"{Path(path).name} {rt.label}", path, rt, options, adq, rt.open(path, threads).run) for rt in rts]


def _emulated_outputs(runs: list[_Run], sets: dict[str, list], env, cpu, threads: int | None) -> dict:
    """``{label: {"set/image": output}}`` of every run, computed in the emulated machine."""
    from ..emulation import aarch64

    keys = [f"{s}/{p.name}" for s, pairs in sets.items() for p in pairs]
    images = [p.lr for pairs in sets.values() for p in pairs]
    outs = aarch64.run_images(env, cpu, [(b.path, b.runtime.name) for b in runs], images, threads)
    return {b.label: dict(zip(keys, o)) for b, o in zip(runs, outs)}


def parity(checkpoint: str, files: list[str], sets: dict[str, list], threads: int | None = None,
           tolerance_db: float = 0.01, tflite_kernels=("xnnpack", "builtin"), progress: bool = True,
           diff_png: str | Path | None = None, machine: str | None = None,
           onnx_runtimes=("onnxruntime",)) -> ParityResult:
    """Parity of ``files`` against ``checkpoint`` on ``sets`` (name -> list of ``data.Pair``);
    ``machine``: ``aarch64[:CPU]`` to run the files there (emulated), None for this one."""
    from .._io import check_writable
    from .._progress import bar as progress_bar
    from ..checkpoint import load_checkpoint
    from ..exporters import reference, targets
    from ..exporters.export import canonical
    from ..exporters.options import ExportOptions

    check_writable(diff_png)
    ck = load_checkpoint(checkpoint)
    model = ck.model.eval()
    if not ck.calibrated:
        raise BadInput(f"{checkpoint}: not calibrated (training did not finish); parity needs the final checkpoint")
    where, arch, env, cpu = "", None, None, None
    if machine:
        from ..emulation import aarch64

        cpu = aarch64.parse_target(machine)
        env = aarch64.load()
        where, arch = env.label(cpu), "aarch64"
    runs: list[_Run] = []
    for f in files:
        meta = file_options(f)
        found = meta["found"]
        if found != ck.spec.to_dict():
            raise BadInput(f"{f}: exported from another architecture than {checkpoint} "
                           f"({found.get('name') or found.get('space')} vs {ck.spec.name or ck.spec.space})")
        runs += _runs_of(f, meta["options"], threads, tflite_kernels, onnx_runtimes, where)
    # The reference runs each file's own graph (the canonical one lowered as the file was:
    # its options, its target's passes) in the arithmetic of the runtime running it.
    graphs = {"reference": canonical(model, ExportOptions())}
    for b in runs:
        opts = file_export_options(b.path, b.options, b.runtime.target)
        graphs[b.label] = targets.get(opts.target).lower(canonical(model, opts), opts)

    emulated = _emulated_outputs(runs, sets, env, cpu, threads) if machine else {}
    torch_run = grey_aware(torch_runner(model))
    rows = {"pytorch": {}, "reference": {}} | {b.label: {} for b in runs}
    worst: dict[str, tuple] = {}
    total = sum(len(p) for p in sets.values())
    bar = progress_bar(total, "parity", progress)
    for set_name, pairs in sets.items():
        for pair in pairs:
            key = f"{set_name}/{pair.name}"
            t = torch_run(pair.lr)
            base = psnr(t, pair.hr, ck.spec.scale)
            rows["pytorch"][key] = {"psnr_db": base, "ssim": ssim(t, pair.hr, ck.spec.scale)}

            def ref(label: str, arithmetic: str):
                return grey_aware(reference.runner(graphs[label], arithmetic))(pair.lr)

            for label, y, r in [("reference", ref("reference", "pytorch"), t)] + \
                    [(b.label, emulated[b.label][key] if b.run is None else grey_aware(b.run)(pair.lr),
                      ref(b.label, _arithmetic(b, arch))) for b in runs]:
                p = psnr(y, pair.hr, ck.spec.scale)
                d = np.abs(y.astype(np.int16) - r.astype(np.int16))
                rows[label][key] = {"psnr_db": p, "ssim": ssim(y, pair.hr, ck.spec.scale),
                                    "delta_psnr_db": p - base, "identical_pixels": float(np.mean(d == 0)),
                                    "max_abs_diff": int(d.max()),
                                    "identical_to_pytorch": float(np.mean(y == t))}
                score = (abs(p - base), -float(np.mean(y == t)))
                if label != "reference" and (label not in worst or score > worst[label][0]):
                    worst[label] = (score, key, y, t)
            bar.update(1)
    bar.close()
    by_label = {b.label: b for b in runs}
    entries = {label: FileParity(imgs, _means(imgs, sets)) if label == "pytorch"
               else _compared(imgs, sets, by_label.get(label), tolerance_db, arch, where)
               for label, imgs in rows.items()}
    result = ParityResult(str(checkpoint), ck.spec.name or ck.spec.space, {k: len(v) for k, v in sets.items()},
                          tolerance_db, entries, all(e.passed is not False for e in entries.values()),
                          machine=where or platform.machine())
    if diff_png and worst:
        label = max(worst, key=lambda k: worst[k][0])
        _, key, y, t = worst[label]
        save_diff_png(y, t, f"{label}, {key}: |file - PyTorch|", diff_png)
        result.worst = {"file": label, "image": key, "png": str(diff_png)}
    return result


def _compared(imgs: dict, sets: dict, b: _Run | None, tolerance_db: float, arch: str | None = None,
              where: str = "") -> FileParity:
    """The row of a file in a runtime (``b``) or, with ``b`` None, of the numpy reference."""
    delta = max(abs(v["delta_psnr_db"]) for v in imgs.values())
    return FileParity(imgs, _means(imgs, sets), path=b.path if b else None, runtime=b.runtime.name if b else "numpy",
                      arithmetic=_arithmetic(b, arch) if b else "pytorch",
                      machine=(where or platform.machine()) if b else None,
                      max_abs_delta_psnr_db=delta, min_identical_pixels=min(v["identical_pixels"] for v in imgs.values()),
                      max_abs_diff=max(v["max_abs_diff"] for v in imgs.values()), passed=delta <= tolerance_db)


def _means(imgs: dict, sets: dict) -> dict:
    out = {}
    for s in sets:
        vals = [v for k, v in imgs.items() if k.startswith(s + "/")]
        out[s] = {m: float(np.mean([v[m] for v in vals])) for m in ("psnr_db", "ssim")}
    return out


def save_diff_png(y: np.ndarray, t: np.ndarray, title: str, out: str | Path) -> None:
    """The file's output beside the absolute difference to PyTorch (grey levels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    d = np.abs(y.astype(np.int16) - t.astype(np.int16))
    d = d.max(axis=2) if d.ndim == 3 else d
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    axes[0].imshow(y, cmap=None if y.ndim == 3 else "gray")
    axes[0].set_title("output")
    im = axes[1].imshow(d, cmap="magma", vmin=0, vmax=max(1, int(d.max())))
    axes[1].set_title(f"|file - PyTorch|, max {int(d.max())}, {100 * float(np.mean(d == 0)):.2f}% identical to PyTorch",
                      fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    for a in axes:
        a.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def markdown(result: ParityResult) -> str:
    sets = list(result.sets)
    lines = [f"Parity of `{result.checkpoint}` ({result.architecture}) on "
             + ", ".join(f"{s} ({n} images)" for s, n in result.sets.items())
             + f"; tolerance {result.tolerance_db} dB; files run on {result.machine}.", "",
             "| model | arithmetic | " + " | ".join(f"{s} PSNR (dB)" for s in sets)
             + " | max abs dPSNR (dB) | min identical pixels | max abs diff | pass |",
             "|---|---|" + "---|" * (len(sets) + 4)]
    for label, e in result.files.items():
        means = " | ".join(f"{e.mean[s]['psnr_db']:.3f}" for s in sets)
        if label == "pytorch":
            lines.append(f"| PyTorch fake-quant | - | {means} | - | - | - | - |")
            continue
        lines.append(f"| {label} | {e.arithmetic} | {means} | {e.max_abs_delta_psnr_db:.4f} | "
                     f"{100 * e.min_identical_pixels:.3f}% | {e.max_abs_diff} | "
                     f"{'yes' if e.passed else '**no**'} |")
    lines += ["", "dPSNR: against the PyTorch model. Identical pixels and max abs diff: against the numpy "
              "reference in the backend's own arithmetic (1.0 and 0 mean the runtime computes exactly "
              "what the reference says)."]
    return "\n".join(lines) + "\n"
