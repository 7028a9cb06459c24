"""Search strategies at equal CPU budget on one space: DNAS with the BitOps penalty, DNAS
with the latency-table penalty, and the Optuna sampling strategies (evolution, bayes, random,
widths searched too); their trial estimate against stand-alone training (Kendall tau), and
the table's predicted against measured latency (MAPE).

    python benchmarks/search_strategies.py --space mobile [--steps 1500] [--trials 40] [--subnets 12]
        [--estimate train|finetune|recalibrate] [--estimate-steps 300] [--train-steps 1000]
        [--subnet-steps 600] [--no-widths] [--work DIR]

1. The latency table (onnxruntime and LiteRT XNNPACK, 128x128 LR, one thread, bits 4 and 8,
   the space's widths, its fixed part fitted on architectures with the bicubic anchor) is measured by ``bench bitops`` and judged on 12 held-out random
   architectures: ``results/latency_table_SPACE.json``, ``results/bitops_SPACE.json``.
2. Budget: each DNAS supernet trains ``--steps`` steps (batch 8, LR patch 24, one thread,
   BSD100, bicubic anchor) and derives its architecture. The sampling strategies score
   ``--trials`` architectures by ``--estimate`` (``search --estimate``): ``train`` trains each
   ``--estimate-steps`` steps from initialised weights, no supernet; ``finetune`` and
   ``recalibrate`` inherit from one one-shot supernet (its time counted in each) trained for
   ``--oneshot-steps`` (default: as many as fit in DNAS-BitOps's wall time, from a timed
   50-step probe). Then the front's best two are fine-tuned (QAFT). Wall times are measured.
3. Every found architecture is trained ``--train-steps`` steps from scratch (the default recipe)
   and scored on Set5 and Set14, exported, and timed in onnxruntime (128x128, one thread,
   median of 10 round-robin rounds) against the table's prediction.
4. ``--subnets`` random architectures: the trials' estimate against ``--subnet-steps``
   stand-alone steps, Kendall tau.

Resumable: everything finished is kept in ``--work``. Results:
``results/search_strategies_SPACE.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
SIZE = (128, 128)
ANCHOR = "bicubic"  # every architecture here has it (the table's fixed part includes it)
SETTINGS = {"mobile": dict(channels=32, blocks=4), "basic_lrtail": dict(channels=36, blocks=3),
            "basic": dict(channels=36, blocks=3)}


def build_table(space: str, widths, work: Path) -> Path:
    from qnas_deploy._io import write_json
    from qnas_deploy.bench.bitops import bitops_vs_latency, markdown

    path = OUT / f"latency_table_{space}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    if old.get("widths") == list(widths) and old.get("anchor") == ANCHOR:
        return path
    r = bitops_vs_latency(space, 12, SIZE, runs=5, threads=1, seed=0, work=work / "table", progress=False,
                          table=True, fit=3, table_runs=10, bits=(4, 8), widths=widths, anchor=ANCHOR,
                          **SETTINGS[space])
    write_json(path, r["table"])
    write_json(OUT / f"bitops_{space}.json", {k: v for k, v in r.items() if k != "table"})
    (OUT / f"bitops_{space}.md").write_text(markdown(r))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="mobile", choices=sorted(SETTINGS))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--oneshot-steps", type=int, default=None,
                    help="one-shot supernet steps (default: DNAS-BitOps's wall time's worth)")
    ap.add_argument("--oneshot-rule", default="sandwich", choices=("sandwich", "single"),
                    help="how the one-shot supernet trains (search/oneshot.py)")
    ap.add_argument("--estimate", default="train", choices=("train", "finetune", "recalibrate"),
                    help="how a trial is scored (search --estimate); train needs no supernet")
    ap.add_argument("--estimate-steps", type=int, default=300)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--subnets", type=int, default=12)
    ap.add_argument("--train-steps", type=int, default=1000, help="steps each found architecture is trained")
    ap.add_argument("--subnet-steps", type=int, default=600, help="stand-alone steps of each random subnet")
    ap.add_argument("--widths", action=argparse.BooleanOptionalAction, default=True,
                    help="the sampling strategies search the free layers' widths too")
    ap.add_argument("--work", default=None)
    args = ap.parse_args(argv)
    import numpy as np
    import torch
    from scipy.stats import kendalltau

    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.cost.latency import load as load_table, predict
    from qnas_deploy.data import PatchDataset, cached_training_store, load_pairs, patch_loader
    from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets
    from qnas_deploy.exporters.export import export
    from qnas_deploy.runtimes import RUNTIMES
    from qnas_deploy.runtimes.timing import Job, round_robin
    from qnas_deploy.search.config import SearchConfig
    from qnas_deploy.search.oneshot import OneShotConfig, build_supernet, estimate_psnr, estimator, train_oneshot
    from qnas_deploy.search.run import checkpoint_path, search
    from qnas_deploy.search.sampling import SamplingConfig, sampling_search
    from qnas_deploy.spaces import get_space
    from qnas_deploy.spec import ArchSpec, LayerSpec, load
    from qnas_deploy.train import TrainConfig, train, validate
    sys.path.insert(0, str(Path(__file__).parent))
    from train_zoo import machine

    torch.set_num_threads(1)
    space, st = args.space, SETTINGS[args.space]
    sp = get_space(space)
    widths = tuple(sp.width_choices) if args.widths else ()
    work = Path(args.work or f"runs/strategies_{space}")
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    table_path = build_table(space, widths, work)
    table = load_table(table_path)
    log(f"table: {len(table['entries'])} entries, {time.perf_counter() - t0:.0f} s")
    store = cached_training_store("BSD100", 4, None)
    pairs = load_pairs("BSD100", 4, None, training=True)  # DNAS splits the images in two halves
    val = load_pairs("Set5", 4, None, training=False)
    res = {"command": "python benchmarks/search_strategies.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine(), "space": space, **st, "widths": list(widths), "steps": args.steps,
           "trials": args.trials, "table": str(table_path.relative_to(OUT.parent.parent)), "strategies": {}}
    found: dict[str, Path] = {}
    times_path = work / "wall.json"
    walls = json.loads(times_path.read_text()) if times_path.is_file() else {}

    def timed(label, fn):
        if label not in walls:
            t = time.perf_counter()
            fn()
            walls[label] = time.perf_counter() - t
            times_path.write_text(json.dumps(walls))
        return walls[label]

    for label, tp in (("dnas-bitops", None), ("dnas-latency", str(table_path))):
        f = work / label / "found.json"
        f.parent.mkdir(exist_ok=True)
        cfg = SearchConfig(space=space, bits=(4, 8), epochs=2, iters=args.steps // 2, batch=8, patch=24, lr=1e-2,
                           latency_table=tp, data="BSD100", anchor=ANCHOR, **st)
        res["strategies"][label] = {"wall_s": timed(label, lambda: search(
            cfg, pairs, f, resume=checkpoint_path(f).is_file(), progress=False, log=lambda m: None))}
        found[label] = f
        log(f"{label}: {res['strategies'][label]}")

    est = estimator(args.estimate, None if args.estimate == "recalibrate" else args.estimate_steps, 8, 24)
    steps = args.oneshot_steps
    if not est.needs_supernet:
        steps = 0
    elif steps is None:  # equal CPU budget: the one-shot supernet gets DNAS-BitOps's wall time
        def probe(rule: str, path: Path) -> float:
            cfg = OneShotConfig(space=space, bits=(4, 8), anchor=ANCHOR, widths=widths, iters=50, batch=8,
                                patch=24, rule=rule, **st)
            path.unlink(missing_ok=True)
            t = time.perf_counter()
            train_oneshot(cfg, store, path, progress=False, log=lambda m: None)
            return (time.perf_counter() - t) / 50

        key = "probe_step_s" + ("" if args.oneshot_rule == "single" else f"_{args.oneshot_rule}")
        if "probe_step_s" not in walls:  # timed next to DNAS-BitOps's run
            walls["probe_step_s"] = probe("single", work / "probe.pt")
        if key not in walls:  # another rule: its cost relative to a single-path step, timed side by side now
            ratio = probe(args.oneshot_rule, work / f"{key}.pt") / probe("single", work / "probe_ratio.pt")
            walls[key] = walls["probe_step_s"] * ratio
        times_path.write_text(json.dumps(walls))
        steps = int(walls["dnas-bitops"] / walls[key])
    res["oneshot_steps"], res["oneshot_rule"] = steps, args.oneshot_rule
    oc = OneShotConfig(space=space, bits=(4, 8), anchor=ANCHOR, widths=widths, iters=steps, batch=8,
                       patch=24, rule=args.oneshot_rule, **st)
    res["estimate"] = {"name": args.estimate, "iters": est.iters, "lr": est.lr, "start": est.start}
    if est.needs_supernet:
        tag = f"os{steps}" + ("" if args.oneshot_rule == "single" else f"_{args.oneshot_rule}")
        if args.estimate != "recalibrate":
            tag += f"_{args.estimate}{est.iters}"
        oneshot_s = timed(f"oneshot-{tag}", lambda: train_oneshot(oc, store, work / f"oneshot_{tag}.pt",
                                                                  progress=False, log=log))
        net = train_oneshot(oc, store, work / f"oneshot_{tag}.pt", progress=False, log=log)  # finished: loads it
    else:  # every trial trains from initialised weights: no supernet, its slots only
        tag, oneshot_s, net = f"train{est.iters}", 0.0, build_supernet(oc).eval()
    res["oneshot_s"] = oneshot_s
    # QAFT: 100 steps from inherited weights; from initialised ones, twice the estimate's training
    qaft = 100 if est.needs_supernet else 2 * est.iters
    for strategy in ("evolution", "bayes", "random"):
        f = work / f"{strategy}_{tag}" / "found.json"
        f.parent.mkdir(exist_ok=True)
        if est.needs_supernet and not f.with_name("found.oneshot.pt").is_file():
            shutil.copy(work / f"oneshot_{tag}.pt", f.with_name("found.oneshot.pt"))  # the shared supernet
        cfg = SamplingConfig(strategy=strategy, trials=args.trials, oneshot=oc, estimate=est,
                             latency_table=str(table_path), top=2, qaft_iters=qaft)
        out = {}
        wall = timed(f"{strategy}-{tag}", lambda: out.update(sampling_search(cfg, store, val, f, progress=False, log=lambda m: None)))
        r = out or json.loads(f.with_name("found.trials.json").read_text())
        res["strategies"][strategy] = {"wall_s": oneshot_s + wall,
                                       "trials": [(t["cost"], t["estimated_psnr_db"]) for t in r["trials"]],
                                       "front": [(t["cost"], t["estimated_psnr_db"]) for t in r["trials"]
                                                 if t["number"] in r["front"]]}
        found[strategy] = f
        log(f"{strategy}: best {r['best']}")

    # Every found architecture: trained from scratch, scored; predicted vs measured latency.
    jobs, labels = [], []
    for label, f in found.items():
        spec = load(f)
        ck = f.parent / "scratch.pt"
        if not ck.is_file() or not load_checkpoint(ck).calibrated:
            train(spec, store, ck, TrainConfig(epochs=1, iters=args.train_steps, batch=8, patch=24),
                  resume=ck.is_file(), progress=False, log=lambda m: None)
        model = load_checkpoint(ck).model.eval()
        from qnas_deploy.infer import grey_aware, torch_runner

        scores = evaluate_sets(grey_aware(torch_runner(model)), ["Set5", "Set14"], 4, None)
        s = res["strategies"][label]
        s.update(layers=[[l.name, l.op, l.w_bits, l.width] for l in spec.layers],
                 bitops_32x32=spec.cost["bitops_32x32"] if spec.cost else None,
                 psnr_set5=scores["sets"]["Set5"]["mean"]["psnr_db"], psnr_set14=scores["sets"]["Set14"]["mean"]["psnr_db"],
                 predicted_ms=float(predict(table, spec, "onnxruntime")))
        onnx = f.parent / "m.onnx"
        if not onnx.is_file():
            export(str(ck), str(onnx), fmt="onnx", log=lambda m: None)
        # Timed as the table's entries and bench bitops' architectures are: the raw input tensor.
        jobs.append(Job(str(onnx), "onnxruntime", RUNTIMES["onnxruntime"].input_shape(*SIZE)))
        labels.append(label)
        log(f"{label}: {s['psnr_set5']:.2f} dB, predicted {s['predicted_ms']:.2f} ms")
    for label, t in zip(labels, round_robin(jobs, 1, 10, 2).timings):
        s = res["strategies"][label]
        s["measured_ms"] = t.median_ms
        s["ape"] = abs(s["predicted_ms"] - t.median_ms) / t.median_ms
    res["mape"] = float(np.mean([s["ape"] for s in res["strategies"].values()]))
    bic = evaluate_sets(bicubic_upscaler(4), ["Set5", "Set14"], 4, None)
    res["bicubic"] = {k: bic["sets"][k]["mean"]["psnr_db"] for k in ("Set5", "Set14")}

    # One-shot estimate against stand-alone training on random subnets (widths drawn too).
    rng = np.random.default_rng(1)
    calib = [b for b, _ in patch_loader(PatchDataset(store, 4, 24, 7, 32), 8)]
    ests, real, subs = [], [], []
    for k in range(args.subnets):
        layers = []
        for s, m in zip(net.slots, net.mixed.values()):
            b = int(rng.choice(m.bits))
            layers.append(LayerSpec(s.name, m.ops[rng.integers(len(m.ops))], b, b,
                                    int(rng.choice(m.widths)) if m.widths else None))
        spec = ArchSpec(space=space, scale=4, channels=st["channels"], blocks=st["blocks"], layers=tuple(layers),
                        adq=sp.has_adq, anchor=ANCHOR)
        ests.append(estimate_psnr(net, spec, calib, val, est, store))
        ck = work / f"sub{k}.pt"
        if not ck.is_file() or not load_checkpoint(ck).calibrated:
            train(spec, store, ck, TrainConfig(epochs=1, iters=args.subnet_steps, batch=8, patch=24),
                  resume=ck.is_file(), progress=False, log=lambda m: None)
        real.append(validate(load_checkpoint(ck).model, val, 4))
        subs.append([[l.op, l.w_bits, l.width] for l in spec.layers])
        log(f"subnet {k}: estimate {ests[-1]:.2f}, stand-alone {real[-1]:.2f}")
    tau = kendalltau(ests, real)
    res["oneshot_vs_standalone"] = {"kendall_tau": float(tau.statistic), "p": float(tau.pvalue), "estimates": ests,
                                    "standalone": real, "standalone_steps": args.subnet_steps, "subnets": subs}
    name = f"search_strategies_{space}"
    (OUT / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    (OUT / f"{name}.md").write_text(markdown(res, args))
    plot(res, OUT / f"{name}.png")
    print(markdown(res, args))
    return 0


def _sampling_budget(res: dict) -> str:
    e = res.get("estimate", {"name": "recalibrate", "iters": 0})
    widths = f" (the free layers' widths {res['widths']} searched too)" if res["widths"] else ""
    if e["name"] == "train":
        return (f"the sampling strategies{widths} score each of {res['trials']} trials by training it {e['iters']} "
                f"steps from initialised weights (no supernet; lr {e['lr']:g}), then train the front's best two "
                f"{2 * e['iters']} steps (QAFT).")
    how = "recalibrated" if e["name"] == "recalibrate" else f"fine-tuned {e['iters']} steps and recalibrated"
    return (f"the sampling strategies{widths} share one one-shot supernet of {res['oneshot_steps']} "
            f"{res.get('oneshot_rule', 'single')}-rule steps (its {res['oneshot_s']:.0f} s counted in each); each of "
            f"{res['trials']} trials inherits its weights, {how}; two 100-step fine-tunes (QAFT).")


def markdown(res: dict, args) -> str:
    b = res["bicubic"]
    md = [f"# Search strategies at equal CPU budget ({res['space']} space)", "",
          f"Command: `{res['command'].strip()}`  ", f"Machine: {res['machine']}.", "",
          f"Each DNAS supernet trained {res['steps']} steps (batch 8, LR patch 24, BSD100, bicubic anchor, bits 4/8); "
          + _sampling_budget(res) + f" Each found architecture then "
          f"trained {args.train_steps} steps from scratch (default recipe) and scored on Set5 / Set14 (bicubic "
          f"{b['Set5']:.2f} / {b['Set14']:.2f}); latency: onnxruntime, 128x128, one thread, predicted by the latency "
          f"table ({res['table']}) and measured (raw input tensor as the table's entries, median of 10, round robin).", "",
          "| strategy | search wall time | Set5 PSNR | Set14 PSNR | predicted ms | measured ms | error |",
          "|---|---|---|---|---|---|---|"]
    for label, s in res["strategies"].items():
        md.append(f"| {label} | {s['wall_s']:.0f} s | {s['psnr_set5']:.2f} | {s['psnr_set14']:.2f} | "
                  f"{s['predicted_ms']:.2f} | {s['measured_ms']:.2f} | {100 * s['ape']:.0f}% |")
    o = res["oneshot_vs_standalone"]
    md += ["", f"Latency prediction MAPE over the found architectures: {100 * res['mape']:.1f}%.  ",
           f"The trials' estimate against stand-alone training ({o['standalone_steps']} steps) on {len(o['estimates'])} "
           f"random subnets: Kendall tau {o['kendall_tau']:.2f} (p = {o['p']:.2g})." if o["estimates"] else
           "The trials' estimate against stand-alone training: not measured in this run (`--subnets 0`)."]
    return "\n".join(md) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for i, (label, s) in enumerate(res["strategies"].items()):
        ax.scatter([s["measured_ms"]], [s["psnr_set5"]], s=60, color=f"C{i}", label=label, marker="*")
    ax.axhline(res["bicubic"]["Set5"], color="0.5", ls=":", lw=1, label="bicubic")
    ax.set_xlabel("measured onnxruntime latency, 128x128 (ms)")
    ax.set_ylabel("Set5 PSNR after training (dB)")
    ax.set_title("found architectures")
    ax.legend(fontsize=7)
    ax = axes[1]
    for i, (label, s) in enumerate(res["strategies"].items()):
        if "trials" in s:
            c, p = zip(*s["trials"])
            ax.scatter(c, p, s=8, color=f"C{i}", alpha=0.4)
            fc, fp = zip(*sorted(s["front"]))
            ax.plot(fc, fp, color=f"C{i}", marker="o", ms=3, label=f"{label} front")
    ax.set_xlabel("predicted latency (ms, table)")
    ax.set_ylabel("one-shot PSNR estimate, Set5 (dB)")
    ax.set_title("sampling trials and fronts")
    ax.legend(fontsize=7)
    fig.suptitle(f"{res['space']}: {res['steps']} supernet steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
