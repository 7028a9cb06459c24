"""``qnas-deploy bench parity``: does every exported file compute what was trained?

Each image goes through the PyTorch fake-quant model (the model as trained), the numpy
integer reference, and every exported file in every backend it runs in. Two questions
are answered per file:

* quality: PSNR/SSIM and the PSNR difference to the PyTorch model (``--tolerance-db``);
* exactness: the share of uint8 output pixels identical to the numpy reference run in
  the *backend's own* arithmetic (``exporters/reference.py``: onnxruntime, LiteRT with
  XNNPACK, LiteRT builtin). A backend that computes what its arithmetic says gives 1.0;
  anything less is a bug in the writer, the reference or the runtime.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import BadInput
from ..infer import grey_aware, torch_runner
from ..metrics import psnr, ssim


@dataclass
class Backend:
    label: str
    path: str
    runtime: str
    arithmetic: str          # reference.ARITHMETIC mode that this backend reproduces
    adq: str | None
    run: Callable


def file_options(path: str | Path) -> dict:
    """The metadata an exported file carries (found.json, export options)."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such model file")
    if p.suffix.lower() == ".onnx":
        from ..exporters.onnx_runner import metadata, session

        meta = metadata(session(p, threads=1))
    elif p.suffix.lower() == ".tflite":
        from ..exporters.tflite import read_metadata

        try:
            meta = read_metadata(p.read_bytes())
        except Exception:  # noqa: BLE001 - a corrupt flatbuffer raises anything
            raise BadInput(f"{p}: not a TFLite flatbuffer") from None
    else:
        raise BadInput(f"{p}: expected an exported .onnx or .tflite file")
    if "qnas.found_json" not in meta:
        raise BadInput(f"{p}: not a qnas-deploy export (no qnas.found_json metadata)")
    return {"found": json.loads(meta["qnas.found_json"]),
            "options": json.loads(meta.get("qnas.export_options", "{}"))}


def backends_of(path: str, opts: dict, threads: int | None = None,
                tflite_kernels=("xnnpack", "builtin")) -> list[Backend]:
    """The backends a file runs in; ``opts`` is its export options (:func:`file_options`)."""
    from ..runners import open_model

    adq = opts.get("adq") if opts.get("adq") not in (None, "none") else None
    name = Path(path).name
    if path.lower().endswith(".onnx"):
        return [Backend(f"{name} onnxruntime", path, "onnxruntime", "ort", adq, open_model(path, threads=threads).run)]
    out = []
    for k in tflite_kernels:
        xnn = k == "xnnpack"
        arith = "xnnpack" if xnn else ("tflite_int4" if opts.get("int4") == "packed" else "tflite")
        out.append(Backend(f"{name} LiteRT {k}", path, f"litert_{k}", arith, adq,
                           open_model(path, threads=threads, xnnpack=xnn).run))
    return out


def parity(checkpoint: str, files: list[str], sets: dict[str, list], threads: int | None = None,
           tolerance_db: float = 0.01, tflite_kernels=("xnnpack", "builtin"), progress: bool = True,
           diff_png: str | Path | None = None) -> dict:
    """Parity of ``files`` against ``checkpoint`` on ``sets`` (name -> list of ``data.Pair``)."""
    from tqdm import tqdm

    from ..checkpoint import load_checkpoint
    from ..exporters import reference
    from ..exporters.lower import lower

    ck = load_checkpoint(checkpoint)
    model = ck.model.eval()
    if not ck.calibrated:
        raise BadInput(f"{checkpoint}: not calibrated (training did not finish); parity needs the final checkpoint")
    backends: list[Backend] = []
    for f in files:
        meta = file_options(f)
        found = meta["found"]
        if found != ck.spec.to_dict():
            raise BadInput(f"{f}: exported from another architecture than {checkpoint} "
                           f"({found.get('name') or found.get('space')} vs {ck.spec.name or ck.spec.space})")
        backends += backends_of(f, meta["options"], threads, tflite_kernels)
    adq_default = "static" if ck.spec.adq else None
    graphs = {}

    def graph(adq):
        key = adq if ck.spec.adq else None
        if key not in graphs:
            graphs[key] = lower(model, key)
        return graphs[key]

    torch_run = grey_aware(torch_runner(model))
    rows = {"pytorch": {}, "reference": {}} | {b.label: {} for b in backends}
    worst: dict[str, tuple] = {}
    total = sum(len(p) for p in sets.values())
    bar = tqdm(total=total, desc="parity", disable=not progress, leave=False)
    for set_name, pairs in sets.items():
        for pair in pairs:
            key = f"{set_name}/{pair.name}"
            t = torch_run(pair.lr)
            base = psnr(t, pair.hr, ck.spec.scale)
            rows["pytorch"][key] = {"psnr_db": base, "ssim": ssim(t, pair.hr, ck.spec.scale)}
            refs: dict[tuple, np.ndarray] = {}

            def ref(arith, adq):
                if (arith, adq) not in refs:
                    refs[(arith, adq)] = grey_aware(reference.runner(graph(adq), arith))(pair.lr)
                return refs[(arith, adq)]

            for label, y, r in [("reference", ref("torch", adq_default), t)] + \
                    [(b.label, grey_aware(b.run)(pair.lr), ref(b.arithmetic, b.adq)) for b in backends]:
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
    result = {"checkpoint": str(checkpoint), "architecture": ck.spec.name or ck.spec.space,
              "sets": {k: len(v) for k, v in sets.items()}, "tolerance_db": tolerance_db, "files": {}}
    for label, imgs in rows.items():
        entry = {"images": imgs, "mean": _means(imgs, sets)}
        if label != "pytorch":
            b = next((b for b in backends if b.label == label), None)
            entry.update(
                path=b.path if b else None, runtime=b.runtime if b else "numpy",
                arithmetic=b.arithmetic if b else "torch",
                max_abs_delta_psnr_db=max(abs(v["delta_psnr_db"]) for v in imgs.values()),
                min_identical_pixels=min(v["identical_pixels"] for v in imgs.values()),
                max_abs_diff=max(v["max_abs_diff"] for v in imgs.values()))
            entry["passed"] = entry["max_abs_delta_psnr_db"] <= tolerance_db
        result["files"][label] = entry
    result["passed"] = all(e.get("passed", True) for e in result["files"].values())
    if diff_png and worst:
        label = max(worst, key=lambda k: worst[k][0])
        _, key, y, t = worst[label]
        save_diff_png(y, t, f"{label}, {key}: |file - PyTorch|", diff_png)
        result["worst"] = {"file": label, "image": key, "png": str(diff_png)}
    return result


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
    axes[1].set_title(f"|difference|, max {int(d.max())}, {100 * float(np.mean(d == 0)):.2f}% identical")
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    for a in axes:
        a.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def markdown(result: dict) -> str:
    sets = list(result["sets"])
    lines = [f"Parity of `{result['checkpoint']}` ({result['architecture']}) on "
             + ", ".join(f"{s} ({n} images)" for s, n in result["sets"].items())
             + f"; tolerance {result['tolerance_db']} dB.", "",
             "| model | arithmetic | " + " | ".join(f"{s} PSNR (dB)" for s in sets)
             + " | max abs dPSNR (dB) | min identical pixels | max abs diff | pass |",
             "|---|---|" + "---|" * (len(sets) + 4)]
    for label, e in result["files"].items():
        means = " | ".join(f"{e['mean'][s]['psnr_db']:.3f}" for s in sets)
        if label == "pytorch":
            lines.append(f"| PyTorch fake-quant | - | {means} | - | - | - | - |")
            continue
        lines.append(f"| {label} | {e['arithmetic']} | {means} | {e['max_abs_delta_psnr_db']:.4f} | "
                     f"{100 * e['min_identical_pixels']:.3f}% | {e['max_abs_diff']} | "
                     f"{'yes' if e['passed'] else '**no**'} |")
    lines += ["", "dPSNR: against the PyTorch model. Identical pixels and max abs diff: against the numpy "
              "reference in the backend's own arithmetic (1.0 and 0 mean the runtime computes exactly "
              "what the reference says)."]
    return "\n".join(lines) + "\n"
