"""What writing a depthwise 1x1 conv dense costs: LiteRT latency of the shipped TFLite files
as exported (``pointwise_exact`` writes a BatchNorm whose channels no representation makes
exact in the builtin depthwise kernels as a dense 1x1 conv, which aarch64 runs in ruy, one
rounding) against the same files with that conv left depthwise.

    python benchmarks/dense_pointwise.py                 # the shipped entries with such a conv
    python benchmarks/dense_pointwise.py --runs 40 --size 180x320

Round robin (``runtimes.timing``): every round times each file once, both kernels, one
thread; medians and their ratio, measured in the same rounds. Writes
results/dense_pointwise.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def files(name: str, work: Path, size: tuple[int, int]) -> dict[str, str] | None:
    """The entry's TFLite file as exported (``dense``) and with every pointwise conv left
    depthwise (``depthwise``); None where the export writes no conv dense."""
    from qnas_deploy.exporters.export import lower, prepare
    from qnas_deploy.exporters.options import ExportOptions
    from qnas_deploy.exporters.passes import pointwise_exact
    from qnas_deploy.zoo import shipped_weights

    p = prepare(str(shipped_weights(name)), log=lambda m: None)
    opts = ExportOptions(format="tflite", input_size=size)
    out, dense = {}, []
    keep = pointwise_exact.dense_where_exacter
    for form in ("dense", "depthwise"):
        if form == "depthwise":  # the counterfactual: the pass without its dense fallback
            pointwise_exact.dense_where_exacter = lambda xt, yt, attrs: attrs
        try:
            g = lower(p.model, opts)
        finally:
            pointwise_exact.dense_where_exacter = keep
        if form == "dense":
            dense = [n.name for n in g.nodes if pointwise_exact.diagonal(g, n)]
            if not dense:
                return None
        from qnas_deploy.exporters.export import metadata, write

        path = work / f"{name}.{form}.tflite"
        write(g, str(path), opts, metadata(p, opts))
        out[form] = str(path)
    out["convs"] = dense
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", default="basic_lrtail_bicubic,rfdn_mixed")
    ap.add_argument("--size", default="180x320", help="LR input HxW (a 720p output frame at x4)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--work", default=str(ROOT.parent / "runs" / "dense_pointwise"))
    a = ap.parse_args(argv)
    from qnas_deploy.bench.latency import host_machine
    from qnas_deploy.runtimes.timing import Job, round_robin

    h, w = (int(v) for v in a.size.split("x"))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    made = {n: f for n in a.entries.split(",") if (f := files(n, work, (h, w))) is not None}
    jobs, keys = [], []
    for name, f in made.items():
        for kernels in ("xnnpack", "builtin"):
            for form in ("dense", "depthwise"):
                jobs.append(Job(f[form], f"litert-{kernels}", (1, h, w, 3)))
                keys.append((name, kernels, form))
    t = round_robin(jobs, 1, a.runs, a.warmup, progress="rounds").timings
    ms = {k: v.median_ms for k, v in zip(keys, t)}
    rows = [{"entry": n, "kernels": k, "dense_convs": made[n]["convs"], "dense_ms": ms[(n, k, "dense")],
             "depthwise_ms": ms[(n, k, "depthwise")], "ratio": ms[(n, k, "dense")] / ms[(n, k, "depthwise")]}
            for n in made for k in ("xnnpack", "builtin")]
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?") if Path("/proc/cpuinfo").is_file() else "?"
    meta = {"machine": host_machine(), "cpu": cpu, "input": f"{h}x{w} LR uint8", "runs": a.runs, "threads": 1}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dense_pointwise.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    md = ["# A depthwise 1x1 conv written dense: its cost", "",
          f"`python benchmarks/dense_pointwise.py` on {cpu} ({meta['machine']['machine']}, "
          f"ai-edge-litert {meta['machine'].get('ai_edge_litert', '?')}); {meta['input']}, one thread, median of "
          f"{a.runs} round-robin runs (both forms and kernels in the same rounds).", "",
          "| entry | convs written dense | LiteRT kernels | dense ms | depthwise ms | dense / depthwise |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['entry']} | {', '.join(r['dense_convs'])} | {r['kernels']} | {r['dense_ms']:.1f} | "
           f"{r['depthwise_ms']:.1f} | {r['ratio']:.3f} |" for r in rows]
    (RESULTS / "dense_pointwise.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
