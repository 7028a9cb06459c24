"""The whole benchmark set on the zoo, and benchmarks/results/REPORT.md.

    python benchmarks/report.py [--full] [--found found.json ...] [--datasets-root DIR]
                                [--redo zoo,bitops] [--work DIR]

Per zoo entry (and per found.json given): QAT on BSD100, Set5/Set14 PSNR of the model as
trained, ONNX and TFLite export of the checkpoint, parity of both files against it
(``bench parity``), int8 latency against the FP32 twin of the same network (all bits 32)
in onnxruntime and LiteRT + XNNPACK. Then BitOps against latency with the per-layer latency
table for both spaces (``bench bitops``), a Pareto plot of PSNR against BitOps and against
measured latency, and the report with every other result file linked.

Each step's numbers are kept in ``results/report/*.json``; a rerun reuses them (``--redo``
measures a step again), so an interrupted run continues where it stopped. Short settings
by default (minutes per entry); ``--full`` trains and measures as the issues' goals ask.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
SHORT = dict(epochs=2, iters=60, parity_sets=["Set5", "Set14"], runs=10, samples=10, table_runs=5)
FULL = dict(epochs=5, iters=173, parity_sets=["Set5", "Set14"], runs=20, samples=30, table_runs=10)
SIZE = (128, 128)


# Results of their own scripts, shown in the report as they stand (each names its command).
INCLUDED = (("Shipped zoo weights: quality against cost", "zoo_quality.md"),
            ("Shipped zoo weights: where they run exactly", "exact_matrix_shipped.md"),
            ("Training recipes", "recipe_study.md"),
            ("Training recipes: the 10-CPU-minute point", "recipe_study_5500.md"),
            ("Training recipes: the 60-CPU-minute point", "recipe_study_33000.md"),
            ("Mixed-precision training", "amp_study.md"),
            ("Search strategies: mobile space", "search_strategies_mobile.md"),
            ("Search strategies: Basic space (LR tail)", "search_strategies_basic_lrtail.md"),
            ("One-shot training rules", "oneshot_rules.md"),
            ("Latency table with widths: mobile space", "bitops_mobile.md"),
            ("Training throughput and loader workers", "loader_throughput.md"),
            ("Sweeps on Ray and training on torchrun", "cluster.md"),
            ("Int8 against float", "int8_speed.md"),
            ("PSNR at equal training budget", "equal_budget.md"))


def included_sections() -> list[str]:
    """The ``INCLUDED`` result files' bodies under the report's own headings (their titles
    dropped, their headings one level down)."""
    md = []
    for title, name in INCLUDED:
        path = OUT / name
        if not path.is_file():
            continue
        body = path.read_text().splitlines()
        body = [("#" + l) if l.startswith("#") else l for l in body[1:]]
        md += [f"## {title}", "", f"From [{name}]({name}).", *body, ""]
    return md


def fp32_twin(spec):
    layers = tuple(dataclasses.replace(l, w_bits=32, a_bits=32) for l in spec.layers)
    return dataclasses.replace(spec, layers=layers, name=f"{spec.name or spec.space}_fp32twin")


def zoo_entry(label: str, spec, s: dict, root: str | None, work: Path) -> dict:
    import torch

    from qnas_deploy.bench.bitops import export_architecture, timing_jobs
    from qnas_deploy.bench.parity import parity
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.cost import summary
    from qnas_deploy.data import load_pairs
    from qnas_deploy.evaluate import evaluate_sets
    from qnas_deploy.exporters.export import export
    from qnas_deploy.infer import grey_aware, torch_runner
    from qnas_deploy.runtimes.timing import round_robin
    from qnas_deploy.train import TrainConfig, train

    torch.set_num_threads(2)
    ck_path = work / f"{label}.pt"
    t0 = time.perf_counter()
    cfg = TrainConfig(epochs=s["epochs"], iters=s["iters"], batch=16, patch=32, optimizer="adam", lr=2e-3, seed=0)
    if not (ck_path.is_file() and load_checkpoint(ck_path).calibrated):
        train(spec, load_pairs("BSD100", 4, root, training=True), ck_path, cfg, resume=ck_path.is_file(),
              log=lambda m: None)
    train_s = time.perf_counter() - t0
    ck = load_checkpoint(ck_path)
    scores = evaluate_sets(grey_aware(torch_runner(ck.model.eval())), ["Set5", "Set14"], 4, root)
    files = {}
    for fmt in ("onnx", "tflite"):
        files[fmt] = str(work / f"{label}.{fmt}")
        export(str(ck_path), files[fmt], fmt, input_size=SIZE, log=lambda m: None)
    par = parity(str(ck_path), list(files.values()),
                 {n: load_pairs(n, 4, root, training=False) for n in s["parity_sets"]}, threads=1).to_dict()
    # int8 and its FP32 twin timed together, round robin: their ratio is measured under one load.
    jobs = timing_jobs(files["onnx"], files["tflite"], SIZE)
    if not spec.float_only:
        _, fp_onnx, fp_tfl = export_architecture(fp32_twin(spec), SIZE, work)
        jobs += timing_jobs(fp_onnx, fp_tfl, SIZE)
    ms = [t.median_ms for t in round_robin(jobs, 1, s["runs"], 3).timings]
    int8 = {"onnxruntime": ms[0], "litert-xnnpack": ms[1]}
    fp32 = {"onnxruntime_ms": ms[2], "litert-xnnpack_ms": ms[3]} if not spec.float_only else None
    cost = summary(spec)
    return {
        "name": label, "space": spec.space, "bits": sorted({l.w_bits for l in spec.layers}),
        "bitops_32x32": cost["bitops_32x32"], "macs_32x32": cost["macs_32x32"],
        "train": {"config": dataclasses.asdict(cfg), "wall_s": train_s},
        "set5_psnr_db": scores["sets"]["Set5"]["mean"]["psnr_db"], "set14_psnr_db": scores["sets"]["Set14"]["mean"]["psnr_db"],
        "set5_ssim": scores["sets"]["Set5"]["mean"]["ssim"], "set14_ssim": scores["sets"]["Set14"]["mean"]["ssim"],
        "parity": {e["runtime"]: {"max_abs_delta_psnr_db": e["max_abs_delta_psnr_db"],
                                  "min_identical_pixels": e["min_identical_pixels"], "passed": e["passed"]}
                   for k, e in par["files"].items() if k != "pytorch"},
        "parity_sets": s["parity_sets"],
        "onnxruntime_ms": int8["onnxruntime"], "litert-xnnpack_ms": int8["litert-xnnpack"],
        "fp32_onnxruntime_ms": fp32["onnxruntime_ms"] if fp32 else int8["onnxruntime"],
        "fp32_litert-xnnpack_ms": fp32["litert-xnnpack_ms"] if fp32 else int8["litert-xnnpack"],
    }


def _cached(path: Path, redo: bool, make):
    if path.is_file() and not redo:
        return json.loads(path.read_text())
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
    return value


def _machine() -> str:
    from qnas_deploy.bench.latency import host_machine as machine

    m = machine()
    return ", ".join(f"{k} {v}" for k, v in m.items())


def _fmt_pct(x):
    return f"{100 * x:.3f}%"


def zoo_markdown(rows: list[dict], bicubic: dict) -> list[str]:
    out = ["| entry | bits | BitOps (G, 32x32) | Set5 (dB) | Set14 (dB) | Set14 vs bicubic | ORT int8 (ms) | "
           "ORT FP32 (ms) | FP32 / int8 | XNN int8 (ms) | XNN FP32 (ms) | FP32 / int8 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(
            f"| {r['name']} | {','.join(map(str, r['bits']))} | {r['bitops_32x32'] / 1e9:.3f} | {r['set5_psnr_db']:.2f} | "
            f"{r['set14_psnr_db']:.2f} | {r['set14_psnr_db'] - bicubic['Set14']:+.2f} | {r['onnxruntime_ms']:.1f} | "
            f"{r['fp32_onnxruntime_ms']:.1f} | {r['fp32_onnxruntime_ms'] / r['onnxruntime_ms']:.2f}x | "
            f"{r['litert-xnnpack_ms']:.1f} | {r['fp32_litert-xnnpack_ms']:.1f} | "
            f"{r['fp32_litert-xnnpack_ms'] / r['litert-xnnpack_ms']:.2f}x |")
    out += ["", "Parity of the exported files against the PyTorch model as trained (max |dPSNR| over the images; "
            "identical pixels against the numpy reference in the backend's own arithmetic):", "",
            "| entry | sets | numpy reference | onnxruntime | LiteRT + XNNPACK | LiteRT builtin |", "|---|---|---|---|---|---|"]
    for r in rows:
        p = r["parity"]
        cell = lambda k: (f"{p[k]['max_abs_delta_psnr_db']:.4f} dB, {_fmt_pct(p[k]['min_identical_pixels'])}"
                          + ("" if p[k]["passed"] else " **miss**")) if k in p else "-"
        out.append(f"| {r['name']} | {','.join(r['parity_sets'])} | {cell('numpy')} | {cell('onnxruntime')} | "
                   f"{cell('litert-xnnpack')} | {cell('litert-builtin')} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="The long settings (issue goals).")
    ap.add_argument("--found", nargs="*", default=[], help="found.json files to train and place beside the zoo.")
    ap.add_argument("--datasets-root", default=None)
    ap.add_argument("--redo", default="", help="Steps to measure again: zoo, bitops (comma-separated).")
    ap.add_argument("--work", default=None, help="Checkpoints and exported files (default: a temporary folder).")
    ap.add_argument("--zoo", default=None, help="Comma-separated zoo entries (default: all).")
    args = ap.parse_args()

    import tempfile

    from qnas_deploy.bench import bitops as bb
    from qnas_deploy.bench.pareto import plot
    from qnas_deploy.spec import load
    from qnas_deploy.zoo import load_zoo, names

    s = FULL if args.full else SHORT
    redo = set(filter(None, args.redo.split(",")))
    work = Path(args.work or tempfile.mkdtemp(prefix="qnas-report-"))
    work.mkdir(parents=True, exist_ok=True)
    store = OUT / "report"
    t_all = time.perf_counter()

    bicubic = {}
    bj = OUT / "bicubic.json"
    if bj.is_file():
        bicubic = {k: v["mean"]["psnr_db"] for k, v in json.loads(bj.read_text())["sets"].items()}
    else:
        from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets

        res = evaluate_sets(bicubic_upscaler(4), ["Set5", "Set14"], 4, args.datasets_root)
        bicubic = {k: v["mean"]["psnr_db"] for k, v in res["sets"].items()}

    entries = [(n, load_zoo(n)) for n in (args.zoo.split(",") if args.zoo else names())]
    entries += [(Path(f).stem, load(f)) for f in args.found]
    rows = []
    for label, spec in entries:
        print(f"zoo: {label}", flush=True)
        rows.append(_cached(store / f"zoo_{label}.json", "zoo" in redo,
                            lambda: zoo_entry(label, spec, s, args.datasets_root, work)))

    bitops = {}
    for space in ("basic", "rfdn"):
        path = OUT / f"bitops_{space}.json"
        print(f"bitops: {space}", flush=True)
        if path.is_file() and "bitops" not in redo:
            bitops[space] = json.loads(path.read_text())
            continue
        res = bb.bitops_vs_latency(space, s["samples"], SIZE, s["runs"], threads=1, table_runs=s["table_runs"])
        bitops[space] = res
        (OUT / f"bitops_{space}.json").write_text(json.dumps(res, indent=2) + "\n")
        (OUT / f"bitops_{space}.md").write_text(bb.markdown(res))
        (OUT / f"latency_table_{space}.json").write_text(json.dumps(res["table"], indent=2) + "\n")
        bb.plot(res, OUT / f"bitops_{space}.png")

    plot(rows, OUT / "pareto.png", "set14_psnr_db", "Set14 PSNR (dB, x4)",
         [("bitops_32x32", "BitOps at 32x32 (G)", 1e9, True), ("onnxruntime_ms", "onnxruntime int8, 128x128, 1 thread (ms)", 1, False),
          ("litert-xnnpack_ms", "LiteRT + XNNPACK int8 (ms)", 1, False)],
         baseline=bicubic.get("Set14"), title="Trained architectures: quality against cost")

    md = ["# qnas-deploy benchmark report", "",
          f"Command: `python benchmarks/report.py {' '.join(sys.argv[1:])}` "
          f"({'full' if args.full else 'short'} settings; cached steps reused from `results/report/`).  ",
          f"Machine: {_machine()}.  ",
          f"Every latency: LR {SIZE[0]}x{SIZE[1]}, 1 thread, median of round-robin rounds after warm-up (an int8 file and its FP32 twin in the same rounds), on this shared machine "
          "(compare ratios measured in one run, not absolute times across runs).", "",
          "## Bicubic baseline (the first external check)", "",
          f"Set5 {bicubic.get('Set5', float('nan')):.2f} dB, Set14 {bicubic.get('Set14', float('nan')):.2f} dB "
          "(published: 28.42 / 26.00). Details: [bicubic.md](bicubic.md).", "",
          "## Zoo: quality, int8 against FP32, parity", "",
          f"Each entry trained on BSD100 with the same settings ({rows[0]['train']['config']['epochs']} epochs x "
          f"{rows[0]['train']['config']['iters']} iterations, batch 16, LR patch 32, Adam 2e-3, cosine) and scored "
          "as trained (PyTorch fake-quant). FP32: the same network with every bit width 32, exported the same way. "
          "BitOps as the search counts them (eq. 8, 32x32 LR)."
          if rows else "No zoo entries.", ""]
    md += zoo_markdown(rows, bicubic) if rows else []
    md += ["", "![Pareto](pareto.png)", "",
           "## BitOps against measured latency, and the per-layer latency table", ""]
    for space, res in bitops.items():
        md += [f"### {space}", "", bb.markdown(res), f"![{space}](bitops_{space}.png)"
               + (f" Table: [latency_table_{space}.json](latency_table_{space}.json)." if "table" in res else ""), ""]
    md += included_sections()
    md += ["## Other results", "",
           "- Training runs (issue 4 goal, 10 minutes): no anchor [train_run.md](train_run.md), "
           "nearest anchor [train_run_anchor.md](train_run_anchor.md), bicubic anchor "
           "[train_run_bicubic.md](train_run_bicubic.md)",
           "- Parity of a longer-trained checkpoint on Set5 + Set14: [parity_basic_mixed.md](parity_basic_mixed.md)",
           "- ONNX export (float convs after optimisation, export time, quantize_static): [onnx_export.md](onnx_export.md)",
           "- TFLite export (sizes, latency at 320x180): [tflite_export.md](tflite_export.md)",
           "- Search speed (SAN vs shared weights) and effects (entropy, BitOps penalty): "
           "[search_speed.md](search_speed.md), [search_effects.md](search_effects.md)", "",
           f"Report wall time: {time.perf_counter() - t_all:.0f} s (cached steps not counted)."]
    (OUT / "REPORT.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
