"""Search strategies at equal CPU budget on the Basic space (the measured latency table's):
DNAS with the BitOps penalty, DNAS with the latency-table penalty, and the Optuna sampling
strategies (evolution, bayes, random) on one one-shot supernet; the one-shot estimate
against stand-alone training (Kendall tau), and predicted against measured latency.

    python benchmarks/search_strategies.py [--steps 400] [--trials 16] [--subnets 12] [--work DIR]

Budget: every search trains its supernet for ``--steps`` steps (batch 8, LR patch 24, one
thread, BSD100); the sampling strategies then spend ``--trials`` one-shot evaluations and
two 100-step fine-tunes, timed. Candidates are scored on Set5; cost is the latency table's
onnxruntime prediction (128x128, one thread). Every found architecture is trained 300
steps from scratch and scored on Set5 (its PSNR in the front), exported and timed in
onnxruntime (predicted vs measured: MAPE). Results: ``results/search_strategies.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
TABLE = OUT / "latency_table_basic.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--train-steps", type=int, default=300, help="steps each found architecture is trained")
    ap.add_argument("--subnet-steps", type=int, default=150, help="stand-alone steps of each random subnet")
    ap.add_argument("--work", default="/tmp/qnas_strategies")
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    from scipy.stats import kendalltau

    from qnas_deploy.cost.latency import load as load_table, predict
    from qnas_deploy.data import cached_training_store, load_pairs
    from qnas_deploy.search.config import SearchConfig
    from qnas_deploy.search.oneshot import OneShotConfig, estimate_psnr, train_oneshot
    from qnas_deploy.search.run import search
    from qnas_deploy.search.sampling import SamplingConfig, sampling_search
    from qnas_deploy.spec import ArchSpec, LayerSpec, load
    from qnas_deploy.train import TrainConfig, train, validate
    sys.path.insert(0, str(Path(__file__).parent))
    from train_zoo import machine

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    table = load_table(str(TABLE))
    store = cached_training_store("BSD100", 4, None)
    pairs = load_pairs("BSD100", 4, None, training=True)
    val = load_pairs("Set5", 4, None, training=False)
    res = {"command": "python benchmarks/search_strategies.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "steps": args.steps, "trials": args.trials, "strategies": {}}
    found: dict[str, Path] = {}

    # DNAS, BitOps and latency-table penalties: the same supernet budget in steps.
    for label, table_path in (("dnas-bitops", None), ("dnas-latency", str(TABLE))):
        f = work / label / "found.json"
        f.parent.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        if not f.is_file():
            cfg = SearchConfig(space="basic", bits=(4, 8), channels=36, blocks=3, epochs=2, iters=args.steps // 2,
                               batch=8, patch=24, lr=1e-2, latency_table=table_path, data="BSD100")
            search(cfg, pairs, f, progress=False, log=lambda m: None)
        res["strategies"][label] = {"wall_s": time.perf_counter() - t0}
        found[label] = f
        print(label, res["strategies"][label], file=sys.stderr, flush=True)

    oc = OneShotConfig(space="basic", bits=(4, 8), channels=36, blocks=3, iters=args.steps, batch=8, patch=24)
    t0 = time.perf_counter()
    net = train_oneshot(oc, store, work / "oneshot.pt", progress=False, log=lambda m: None)
    oneshot_s = time.perf_counter() - t0
    res["oneshot_s"] = oneshot_s
    for strategy in ("evolution", "bayes", "random"):
        f = work / strategy / "found.json"
        f.parent.mkdir(exist_ok=True)
        shutil.copy(work / "oneshot.pt", f.with_name("found.oneshot.pt"))  # the shared supernet
        cfg = SamplingConfig(strategy=strategy, trials=args.trials, oneshot=oc, latency_table=str(TABLE), top=2,
                             qaft_iters=100)
        r = sampling_search(cfg, store, val, f, progress=False, log=lambda m: None)
        res["strategies"][strategy] = {"wall_s": oneshot_s + r["wall_s"],
                                       "front": [(t["cost"], t["estimated_psnr_db"]) for t in r["trials"]
                                                 if t["number"] in r["front"]]}
        found[strategy] = f
        print(strategy, r["best"], file=sys.stderr, flush=True)

    # Every found architecture: 300 steps from scratch, Set5; predicted vs measured latency.
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.exporters.export import export
    from qnas_deploy.runtimes.timing import Job, round_robin

    jobs, labels = [], []
    for label, f in found.items():
        spec = load(f)
        ck = work / label / "scratch.pt"
        if not ck.is_file():
            train(spec, store, ck, TrainConfig(epochs=1, iters=args.train_steps, batch=8, patch=24), progress=False, log=lambda m: None)
        s = res["strategies"][label]
        s["psnr_set5"] = validate(load_checkpoint(ck).model, val, 4)
        s["predicted_ms"] = float(predict(table, spec, "onnxruntime"))
        onnx = work / label / "m.onnx"
        if not onnx.is_file():
            export(str(f), str(onnx), fmt="onnx", log=lambda m: None)
        jobs.append(Job(str(onnx), "onnxruntime", (128, 128), image=True))
        labels.append(label)
    timings = round_robin(jobs, 1, 10, 2).timings
    for label, t in zip(labels, timings):
        s = res["strategies"][label]
        s["measured_ms"] = t.median_ms
        s["ape"] = abs(s["predicted_ms"] - t.median_ms) / t.median_ms
    res["mape"] = float(np.mean([s["ape"] for s in res["strategies"].values()]))

    # One-shot estimate against stand-alone training on random subnets.
    rng = np.random.default_rng(1)
    est, real = [], []
    from qnas_deploy.data import PatchDataset, patch_loader
    calib = [b for b, _ in patch_loader(PatchDataset(store, 4, 24, 7, 32), 8)]
    for k in range(args.subnets):
        layers = tuple(LayerSpec(s.name, m.ops[rng.integers(len(m.ops))], b, b)
                       for s, m in zip(net.slots, net.mixed.values()) for b in [int(rng.choice(m.bits))])
        spec = ArchSpec(space="basic", scale=4, channels=36, blocks=3, layers=layers)
        est.append(estimate_psnr(net, spec, calib, val))
        ck = work / f"sub{k}.pt"
        if not ck.is_file():
            train(spec, store, ck, TrainConfig(epochs=1, iters=args.subnet_steps, batch=8, patch=24), progress=False, log=lambda m: None)
        real.append(validate(load_checkpoint(ck).model, val, 4))
        print("subnet", k, est[-1], real[-1], file=sys.stderr, flush=True)
    tau = kendalltau(est, real)
    res["oneshot_vs_standalone"] = {"kendall_tau": float(tau.statistic), "p": float(tau.pvalue), "estimates": est,
                                    "standalone": real, "standalone_steps": args.subnet_steps}
    (OUT / "search_strategies.json").write_text(json.dumps(res, indent=1) + "\n")
    md = ["# Search strategies at equal supernet budget (Basic space)", "", f"Command: `{res['command'].strip()}`  ",
          f"Machine: {res['machine']}.", "",
          f"Every supernet trained {args.steps} steps (batch 8, LR patch 24, BSD100); sampling strategies: "
          f"{args.trials} one-shot trials and two 100-step fine-tunes. Each found architecture then trained "
          f"{args.train_steps} steps from scratch and scored on Set5; latency: onnxruntime, 128x128, one thread, predicted by the "
          "latency table and measured (median of 10, round robin).", "",
          f"| strategy | wall time | Set5 PSNR ({args.train_steps} steps) | predicted ms | measured ms | error |", "|---|---|---|---|---|---|"]
    for label, s in res["strategies"].items():
        md.append(f"| {label} | {s['wall_s']:.0f} s | {s['psnr_set5']:.2f} | {s['predicted_ms']:.1f} | "
                  f"{s['measured_ms']:.1f} | {100 * s['ape']:.0f}% |")
    o = res["oneshot_vs_standalone"]
    md += ["", f"Latency prediction MAPE over the found architectures: {100 * res['mape']:.0f}%.  ",
           f"One-shot estimate against stand-alone training ({args.subnet_steps} steps) on {args.subnets} random subnets: "
           f"Kendall tau {o['kendall_tau']:.2f} (p = {o['p']:.2g})."]
    (OUT / "search_strategies.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
