"""Where it runs exactly: every quantized zoo entry, briefly trained, exported and run in
every runtime on this x86 machine and on emulated aarch64 CPUs.

Per cell (entry and file variant x runtime x machine): the share of output pixels
identical to the numpy reference in that runtime's arithmetic on that machine (the least
over the images, and the largest difference), and the largest |PSNR difference| to the
PyTorch model over the images. Resumable: checkpoints, files and finished cells are kept
in ``--work`` and reused while both the checkpoint and the exporter's code are unchanged (a
file or cell is stamped with a hash of ``qnas_deploy/exporters``; the tables mark a cell kept
from an earlier exporter with a dagger).

    python benchmarks/exact_matrix.py                          # ~/.cache/qnas-deploy/exact-matrix
    python benchmarks/exact_matrix.py --readme README.md       # and rewrite the README's table
    python benchmarks/exact_matrix.py --entries espcn_w8a8 --machines x86_64,aarch64:max --sets Set5
    python benchmarks/exact_matrix.py --shipped --readme README.md   # the shipped trained weights

``--shipped`` runs the entries that ship trained weights, as shipped (no training), into
``results/exact_matrix_shipped.*`` and the README's shipped-matrix table.

Writes ``benchmarks/results/exact_matrix.json`` and ``.md``. The aarch64 machines need
``qnas-deploy target setup aarch64``.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MACHINES = ("x86_64", "aarch64:cortex-a72", "aarch64:neoverse-n1", "aarch64:max")
# (variant name, export options); int4 packed only where the entry has 4-bit layers.
VARIANTS = {"uint8": {}, "int4-packed": {"int4": "packed"}}
# Packed INT4 TFLite is made for LiteRT's builtin kernels (XNNPACK takes no INT4 conv filter).
TFLITE_TARGET = {"int4-packed": "litert-builtin"}
START, END = "<!-- exact-matrix:start -->", "<!-- exact-matrix:end -->"


def entries() -> list[str]:
    from qnas_deploy.zoo import load_zoo, names

    return [n for n in names() if not load_zoo(n).float_only]


def variants(name: str, packed: set[str] | None = None) -> list[str]:
    """uint8, and packed INT4 where the entry has 4-bit layers (and is in ``packed``, if given)."""
    from qnas_deploy.zoo import load_zoo

    spec = load_zoo(name)
    has4 = any(l.w_bits == 4 for l in spec.layers) and (packed is None or name in packed)
    return ["uint8"] + (["int4-packed"] if has4 else [])


SHIPPED = False
# The weight grid the LiteRT targets need and the shipped weights use: [-127, 127]. 8-bit
# weights of -128 overflow the int16 pair sums of the ARM GEMMs without the dot product
# (cortex-a72), so full-grid files are not exact there (README, "Trained models").
GRID = "narrow"


def checkpoint(name: str, work: Path, iters: int, data: str, log) -> Path:
    """``name`` trained for ``iters`` Adam steps on ``data`` (resumed where a run stopped);
    with ``--shipped``, its shipped weights."""
    from qnas_deploy.data import resolve_dataset, training_pairs
    from qnas_deploy.train import TrainConfig, train
    from qnas_deploy.zoo import load_zoo, shipped_weights

    ck = work / "ckpt" / f"{name}.pt"
    done = work / "ckpt" / f"{name}.done"
    ck.parent.mkdir(parents=True, exist_ok=True)
    if SHIPPED:
        done.write_text(json.dumps(shipped_record(name)))
        return shipped_weights(name)
    if done.is_file():
        if json.loads(done.read_text()).get("weight_grid") == GRID:
            return ck
        done.unlink()  # trained on another weight grid before: train again
        ck.unlink(missing_ok=True)
    spec = dataclasses.replace(load_zoo(name), weight_grid=GRID)
    pairs = training_pairs(resolve_dataset(data), spec.scale)
    cfg = TrainConfig(epochs=max(1, iters // 50), iters=min(iters, 50), batch=4, patch=24, lr=1e-3,
                      optimizer="adam", seed=0)
    t = time.time()
    train(spec, pairs, ck, cfg, resume=ck.is_file(), progress=False, log=lambda m: None)
    done.write_text(json.dumps({"iters": cfg.epochs * cfg.iters, "data": data, "recipe": "adam 1e-3, batch 4, "
                                "patch 24", "weight_grid": GRID, "seconds": round(time.time() - t, 1)}))
    log(f"trained {name}: {time.time() - t:.0f} s")
    return ck


def shipped_record(name: str) -> dict:
    """How the shipped weights of ``name`` were trained (what each of their cells records)."""
    import torch

    from qnas_deploy.zoo import shipped_weights

    made = torch.load(shipped_weights(name), weights_only=True)["record"]["made_by"]
    c = made["config"]
    record = {"iters": c["epochs"] * c["iters"], "data": made["data"], "recipe": made["recipe"],
              "seconds": made["train_seconds"], "shipped": True}
    if made.get("reshipped"):  # snapped again since (train_zoo.py --reship): other weights
        record["reshipped"] = made["reshipped"][-1]["at"]
    return record


def exporter_digest() -> str:
    """The exporter's code (``qnas_deploy/exporters``: passes, serializers, the reference's
    arithmetic) as a short hash of each module's syntax tree without docstrings: a changed
    pass or kernel model makes files and cells again even from the same checkpoint; a
    comment or docstring edit keeps them."""
    import qnas_deploy

    root = Path(qnas_deploy.__file__).resolve().parent / "exporters"
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()[:12]


EXPORTER = exporter_digest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".exporter")


def _fresh(path: Path, ck: Path) -> bool:
    """A cached file or cell made from this checkpoint by this exporter: newer than the
    checkpoint (a re-shipped or retrained one makes its files and cells again) and stamped
    with :data:`EXPORTER` (a file's stamp beside it, a cell's in its rows)."""
    if not (path.is_file() and path.stat().st_mtime >= Path(ck).stat().st_mtime):
        return False
    if path.suffix == ".json":
        return all(r.get("exporter") == EXPORTER for r in json.loads(path.read_text()))
    return _stamp(path).is_file() and _stamp(path).read_text() == EXPORTER


def _made(path: Path) -> None:
    _stamp(path).write_text(EXPORTER)


def files_of(name: str, ck: Path, work: Path, packed: set[str] | None = None) -> dict[str, list[str]]:
    from qnas_deploy.exporters.export import export

    out = {}
    for v in variants(name, packed):
        paths = []
        for fmt in ("onnx", "tflite") if v == "uint8" else ("tflite",):  # packed INT4: TFLite builtin only
            p = work / "files" / f"{name}.{v}.{fmt}"
            if not _fresh(p, ck):
                p.parent.mkdir(parents=True, exist_ok=True)
                target = TFLITE_TARGET.get(v) if fmt == "tflite" else None
                export(str(ck), str(p), fmt=fmt, log=lambda _: None, target=target, **VARIANTS[v])
                _made(p)
            paths.append(str(p))
        out[v] = paths
    return out


def openvino_file(name: str, variant: str, ck: Path, work: Path) -> str:
    """The entry's ONNX file for the openvino target (a copy between each conv and its add)."""
    from qnas_deploy.exporters.export import export

    p = work / "files" / f"{name}.{variant}.openvino.onnx"
    if not _fresh(p, ck):
        export(str(ck), str(p), fmt="onnx", target="openvino", log=lambda _: None, **VARIANTS[variant])
        _made(p)
    return str(p)


CACHED_ONLY = False


def cells(name: str, variant: str, ck: Path, files: list[str], machine: str, sets: dict, work: Path,
          onnx_runtimes=("onnxruntime",), kernels=("xnnpack", "builtin")) -> list[dict]:
    """One parity run: ``files`` in ``onnx_runtimes`` and LiteRT's ``kernels`` on ``machine``
    (cached under ``work/cells``, one file per entry, variant, machine and runtime set)."""
    from qnas_deploy.bench.parity import parity

    tag = "+".join(onnx_runtimes + kernels)
    key = work / "cells" / f"{name}.{variant}.{machine.replace(':', '_')}.{tag}.json"
    if _fresh(key, ck):
        return json.loads(key.read_text())
    if CACHED_ONLY:
        return []
    m = None if machine == "x86_64" else machine
    if not kernels:
        files = [f for f in files if f.endswith(".onnx")]
    t = time.time()
    r = parity(str(ck), files, sets, tflite_kernels=kernels, progress=False, machine=m, onnx_runtimes=onnx_runtimes)
    rows = []
    for label, row in r.files.items():
        if row.runtime in (None, "numpy"):
            continue
        rows.append({"entry": name, "variant": variant, "machine": machine, "runtime": row.runtime,
                     "arithmetic": row.arithmetic, "identical": row.min_identical_pixels,
                     "max_abs_diff": row.max_abs_diff, "max_abs_dpsnr_db": row.max_abs_delta_psnr_db,
                     "where": row.machine, "seconds": round(time.time() - t, 1), "exporter": EXPORTER,
                     "trained": json.loads((work / "ckpt" / f"{name}.done").read_text())})
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps(rows))
    return rows


def x86_cpu() -> str:
    """This machine's CPU model and whether it has the int8 dot product (VNNI)."""
    from qnas_deploy.runtimes.openvino import int8_dot_product

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
    return f"{model}, {'with' if int8_dot_product() else 'without'} VNNI"


def keep_others(rows: list[dict], last: Path, order: list[str]) -> list[dict]:
    """``rows``, and the last results' cells this run did not run (an ``--entries`` or
    ``--machines`` run refreshes those and keeps the rest as last measured), in zoo order.
    With ``--shipped``, a kept cell must be of the weights shipped now (a re-shipped entry's
    old cells drop out until it is run again)."""
    key = lambda r: (r["entry"], r["variant"], r["machine"], r["runtime"])  # noqa: E731
    run = {key(r) for r in rows}
    kept = json.loads(last.read_text())["rows"] if last.is_file() else []
    now = {n: shipped_record(n) for n in order} if SHIPPED else {}
    rows = rows + [r for r in kept if key(r) not in run and r["entry"] in order
                   and (not SHIPPED or r.get("trained") == now[r["entry"]])]
    return sorted(rows, key=lambda r: order.index(r["entry"]))  # stable: each entry's rows keep their order


def markdown(rows: list[dict], machines: list[str], meta: dict) -> str:
    runtimes = sorted({r["runtime"] for r in rows}, key=lambda n: ["onnxruntime", "openvino", "litert-xnnpack",
                                                                  "litert-builtin"].index(n)
                      if n in ("onnxruntime", "openvino", "litert-xnnpack", "litert-builtin") else 9)
    shown = list(dict.fromkeys([*machines, *MACHINES, *(r["machine"] for r in rows)]))  # kept cells' too
    cols = [(rt, m) for rt in runtimes for m in shown if any(r["runtime"] == rt and r["machine"] == m
                                                              for r in rows)]
    head = "| entry | file | " + " | ".join(f"{rt} {m.replace('aarch64:', 'aarch64 ')}" for rt, m in cols) + " |"
    lines = [head, "|---|---|" + "---|" * len(cols)]
    for key in dict.fromkeys((r["entry"], r["variant"]) for r in rows):
        cells_ = []
        for rt, m in cols:
            c = next((r for r in rows if (r["entry"], r["variant"], r["runtime"], r["machine"]) == (*key, rt, m)), None)
            if c is None:
                cells_.append("-")
                continue
            ident = "**100%**" if c["identical"] == 1.0 else f"{100 * c['identical']:.2f}% (max {c['max_abs_diff']})"
            old = "" if c.get("exporter") == EXPORTER else " †"
            cells_.append(f"{ident}, {c['max_abs_dpsnr_db']:.3f} dB{old}")
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells_) + " |")
    return ("Each cell: the least share of output pixels identical to the numpy reference in that runtime's "
            "arithmetic on that machine (over the images), the largest difference where not all are, and the "
            f"largest |PSNR - PyTorch's| over the images ({meta['sets']} on x86, {meta['arm_sets']} on aarch64). "
            + ("Models: the shipped trained weights (narrow weight grid). " if SHIPPED else "Models: each quantized "
               f"zoo entry trained {meta['iters']} Adam steps on {meta['data']} on the narrow weight grid (as the "
               "shipped weights; a full-grid file is not exact on cortex-a72). ")
            + f"aarch64: the same runtime releases' aarch64 "
            f"builds under qemu {meta.get('qemu', '?')} user mode ({meta.get('cpus', '')}). "
            + (f"x86_64: {'; '.join(sorted({r['cpu'] for r in rows if 'cpu' in r}))}"
               + (" (earlier cells: an Intel Xeon with AVX-512 VNNI)" if any(
                   r["machine"] == "x86_64" and "cpu" not in r for r in rows) else "") + ". "
               if any("cpu" in r for r in rows) else "")
            +
            f"`python benchmarks/exact_matrix.py {'--shipped ' if SHIPPED else ''}--readme README.md` remakes it.\n\n"
            + "\n".join(lines) + "\n"
            + ("\n† a cell kept from a run of an earlier exporter (its code differs from this one's, "
               f"{EXPORTER}); rerun the entry to refresh it.\n" if any(r.get("exporter") != EXPORTER for r in rows)
               else f"\nEvery cell from this exporter ({EXPORTER}).\n"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", default=None, help="comma-separated zoo entries (default: every quantized one)")
    ap.add_argument("--machines", default=",".join(MACHINES))
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--data", default="BSD100", help="training images")
    ap.add_argument("--iters", type=int, default=150, help="training steps per entry")
    ap.add_argument("--arm-sets", default="Set5", help="images run on the emulated machines (an emulator is "
                    "10-50x slower than this CPU)")
    ap.add_argument("--train-only", action="store_true", help="train (and export) every entry, run nothing")
    ap.add_argument("--work", default=None, help="checkpoints, files and finished cells (resumable)")
    ap.add_argument("--onnx-runtimes", default="onnxruntime,openvino", help="on x86: ONNX runtimes to run "
                    "(onnxruntime always)")
    ap.add_argument("--packed", default=None, help="entries to run with packed INT4 too (default: every entry "
                    "with 4-bit layers)")
    ap.add_argument("--cached-only", action="store_true", help="tabulate the finished cells, run nothing new")
    ap.add_argument("--readme", default=None, help="rewrite the table between the exact-matrix markers")
    ap.add_argument("--shipped", action="store_true", help="the entries with shipped weights, as shipped")
    a = ap.parse_args(argv)

    from qnas_deploy.data import benchmark_pairs, resolve_dataset
    from qnas_deploy.emulation import aarch64
    from qnas_deploy.runtimes import RUNTIMES

    global CACHED_ONLY, SHIPPED, START, END
    CACHED_ONLY, SHIPPED = a.cached_only, a.shipped
    work = Path(a.work) if a.work else aarch64.cache_root() / ("exact-matrix-shipped" if a.shipped else "exact-matrix")
    machines = a.machines.split(",")
    if a.shipped:
        from qnas_deploy.zoo import with_weights

        START, END = "<!-- shipped-matrix:start -->", "<!-- shipped-matrix:end -->"
        names = a.entries.split(",") if a.entries else with_weights()
    else:
        names = a.entries.split(",") if a.entries else entries()
    sets = {s: benchmark_pairs(resolve_dataset(s), 4) for s in a.sets.split(",")}
    arm_sets = {s: benchmark_pairs(resolve_dataset(s), 4) for s in a.arm_sets.split(",")}
    onnx_runtimes = tuple(r for r in a.onnx_runtimes.split(",") if r in RUNTIMES)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    for name in names:
        ck = checkpoint(name, work, a.iters, a.data, log)
        for variant, files in files_of(name, ck, work, set(a.packed.split(",")) if a.packed else None).items():
            for m in [] if a.train_only else machines:
                t = time.time()
                rows += cells(name, variant, ck, files, m, sets if m == "x86_64" else arm_sets, work)
                # OpenVINO has no aarch64 build here; packed INT4 is a TFLite-only variant
                if m == "x86_64" and "openvino" in onnx_runtimes and variant == "uint8":
                    rows += cells(name, variant, ck, [openvino_file(name, variant, ck, work)], m, sets, work,
                                  ("openvino",), ())
                log(f"{name} {variant} {m}: {time.time() - t:.0f} s")
    if a.train_only:
        return 0
    stem = "exact_matrix_shipped" if a.shipped else "exact_matrix"
    for r in rows:  # the x86 CPU a cell ran on (OpenVINO's int8 convs differ without VNNI)
        if r["machine"] == "x86_64":
            r.setdefault("cpu", x86_cpu())
    rows = keep_others(rows, RESULTS / f"{stem}.json", with_weights() if a.shipped else entries())
    # Cells keep the training of the checkpoint they ran (a cell cached from an earlier run
    # may come from an earlier checkpoint of the same recipe).
    steps = sorted({r["trained"]["iters"] for r in rows if "trained" in r})
    if any("trained" not in r for r in rows):
        steps.append("(cells from before checkpoints were recorded) 100 or 150")
    meta = {"sets": " + ".join(sets), "arm_sets": " + ".join(arm_sets), "data": a.data,
            "iters": " or ".join(str(s) for s in steps)}
    try:
        env = aarch64.load()
        meta.update(qemu=env.info["qemu"], versions=env.info["versions"],
                    cpus=", ".join(f"{c}: {aarch64.CPUS[c].features}" for c in (m.split(":")[1] for m in machines
                                                                               if m.startswith("aarch64:"))))
    except Exception:  # noqa: BLE001 - x86 only
        pass
    md = markdown(rows, machines, meta)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (RESULTS / f"{stem}.md").write_text("# Where it runs exactly" + (" (shipped weights)" if a.shipped else "")
                                        + "\n\n" + md)
    if a.readme:
        text = Path(a.readme).read_text()
        i, j = text.index(START), text.index(END)
        Path(a.readme).write_text(text[:i + len(START)] + "\n" + md + text[j:])
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
