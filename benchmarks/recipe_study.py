"""The training-recipe study: which settings converge, and which starts get closer sooner.

    python benchmarks/recipe_study.py [--iters 3000] [--runs LABEL,...] [--work DIR] [--threads 1] [--redo]

Every run trains ``mobile_w8a8`` (narrow weight grid, as shipped) on BSD100 with seed 0,
batch 16, LR patch 32 for ``--iters`` iterations (3000: about 5 minutes of one core of
this CPU), then is calibrated and scored as trained on Set5 and Set14 x4. (The Basic
entries with the bicubic anchor do not leave the anchor under any of these recipes: see
the README's training section; a recipe study on them compares nothing.)

* ``paper``: the old defaults (QuantNAS appendix D: SGD 1e-3, momentum 0.9, cosine);
* ``default``: the recipe ``train`` now uses (Adam 2e-3, 2% linear warm-up, cosine);
* ``default, lr 1e-3`` and ``default, lr 5e-3``: its learning rate halved and raised;
* ``float warm-up``: ``default`` with the first 20% of iterations in float;
* ``supernet init``: ``default`` started from the weights a search's supernet trained for
  the entry's path (a search of the same space, sizes and anchor: 300 iterations, timed
  separately and reported).

A CPU-time budget is set as iterations: 3000 took 4.6 to 5.7 minutes of one core here, so
``--iters 5500`` is the 10-CPU-minute point and ``--iters 33000`` the 60-minute one (each run's
own time is reported; two studies with different ``--runs`` may share the cores); results of
other ``--iters`` go to ``results/recipe_study_ITERS.{json,md}``. ``--runs`` picks starts.
The longer point of ``default`` is the shipped weights' run (``benchmarks/train_zoo.py``,
the same settings for 10000 iterations). Results go to ``results/recipe_study.json`` as each
run finishes (an interrupted study continues; ``--redo`` starts again).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
ENTRY, DATA, SEED = "mobile_w8a8", "BSD100", 0
EPOCH_ITERS = 500
RUNS = {"paper": dict(recipe="paper"), "default": dict(), "default, lr 1e-3": dict(lr=1e-3),
        "default, lr 5e-3": dict(lr=5e-3), "float warm-up": dict(float_warmup=0.2), "supernet init": dict(init=True)}


def supernet_search(work: Path, root: str | None) -> tuple[Path, float]:
    from qnas_deploy.data import load_pairs
    from qnas_deploy.search.config import SearchConfig
    from qnas_deploy.search.run import checkpoint_path, search
    from qnas_deploy.zoo import load_zoo

    spec = load_zoo(ENTRY)
    found = work / "supernet_found.json"
    done = work / "supernet_seconds.txt"
    if done.is_file():
        return found, float(done.read_text())
    cfg = SearchConfig(space=spec.space, bits=(4, 8), channels=spec.channels, blocks=spec.blocks, anchor=spec.anchor,
                       epochs=3, iters=100, batch=16, patch=32, lr=1e-2, seed=SEED, data=DATA)
    t0 = time.perf_counter()
    search(cfg, load_pairs(DATA, 4, root, training=True), found, resume=checkpoint_path(found).is_file(),
           progress=False, log=lambda m: print(f"search: {m}", file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    done.write_text(f"{seconds:.1f}")
    return found, seconds


def run_one(label: str, over: dict, iters: int, work: Path, root: str | None) -> dict:
    from qnas_deploy.checkpoint import load_checkpoint
    from qnas_deploy.data import cached_training_store, load_pairs
    from qnas_deploy.evaluate import evaluate_sets
    from qnas_deploy.infer import grey_aware, torch_runner
    from qnas_deploy.train import TrainConfig, train
    from qnas_deploy.zoo import load_zoo

    spec = dataclasses.replace(load_zoo(ENTRY), weight_grid="narrow")
    over = dict(over)
    extra = {}
    if over.pop("init", False):
        found, secs = supernet_search(work, root)
        over["init"] = str(found)
        extra["search_seconds"] = secs
    cfg = TrainConfig.from_recipe(over.pop("recipe", "default"), epochs=max(1, iters // EPOCH_ITERS),
                                  iters=min(iters, EPOCH_ITERS), seed=SEED, **over)
    ck_path = work / (label.replace(" ", "_").replace(",", "") + ".pt")
    if not (ck_path.is_file() and load_checkpoint(ck_path).calibrated):
        train(spec, cached_training_store(DATA, 4, root), ck_path, cfg,
              val_pairs=load_pairs("Set5", 4, root, training=False), resume=ck_path.is_file(), progress=False,
              log=lambda m: print(f"{label}: {m}", file=sys.stderr, flush=True))
    ck = load_checkpoint(ck_path)
    s = evaluate_sets(grey_aware(torch_runner(ck.model.eval())), ["Set5", "Set14"], 4, root)
    hist = ck.record["history"]
    return {"config": dataclasses.asdict(cfg), "train_seconds": round(sum(h["seconds"] for h in hist), 1),
            "val_curve": [(h["epoch"] * cfg.iters, round(h.get("val_psnr_db", float("nan")), 3)) for h in hist],
            **{f"{k.lower()}_psnr_db": s["sets"][k]["mean"]["psnr_db"] for k in ("Set5", "Set14")}, **extra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--work", default=str(ROOT / "runs" / "recipe_study"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--datasets-root", default=None)
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated starts (labels of RUNS)")
    args = ap.parse_args(argv)
    labels = [l for l in args.runs.split(",") if l]
    for l in labels:
        if l not in RUNS:
            ap.error(f"--runs: {l!r} is not one of {', '.join(RUNS)}")
    import torch

    from qnas_deploy.evaluate import bicubic_upscaler, evaluate_sets
    sys.path.insert(0, str(Path(__file__).parent))
    from train_zoo import machine

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    stem = "recipe_study" if args.iters == 3000 else f"recipe_study_{args.iters}"
    path = OUT / f"{stem}.json"
    res = json.loads(path.read_text()) if path.is_file() and not args.redo else {}
    if res.get("iters") != args.iters:
        res = {}
    bic = evaluate_sets(bicubic_upscaler(4), ["Set5", "Set14"], 4, args.datasets_root)
    res.update({"command": "python benchmarks/recipe_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "machine": machine(), "entry": ENTRY, "iters": args.iters,
                "bicubic": {k: bic["sets"][k]["mean"]["psnr_db"] for k in ("Set5", "Set14")}})
    res.setdefault("runs", {})
    for label, over in RUNS.items():
        if label in labels and label not in res["runs"]:
            row = run_one(label, over, args.iters, work, args.datasets_root)
            print(label, row, file=sys.stderr, flush=True)
            # Two studies of the same --iters may run side by side (one per core): merge with what
            # the other has written since this one started, so neither loses the other's rows.
            if path.is_file():
                res["runs"] = {**json.loads(path.read_text()).get("runs", {}), **res["runs"]}
            res["runs"][label] = row
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(res, indent=1) + "\n")
            tmp.replace(path)
    res["runs"] = {k: res["runs"][k] for k in RUNS if k in res["runs"]}
    write_md(res, stem)
    return 0


def write_md(res: dict, stem: str = "recipe_study") -> None:
    b = res["bicubic"]
    md = ["# Training recipes", "", f"Command: `{res['command'].strip()}`  ", f"Machine: {res['machine']}.", "",
          f"{res['entry']} (narrow weight grid), BSD100, seed 0, batch 16, LR patch 32, {res['iters']} iterations "
          "each; scored as trained on Set5 / Set14 x4 (Y, 4 pixels shaved).", "",
          "| start | Set5 PSNR | Set14 PSNR | Set14 vs bicubic | train time |", "|---|---|---|---|---|",
          f"| bicubic | {b['Set5']:.2f} | {b['Set14']:.2f} | - | - |"]
    for label, r in res["runs"].items():
        t = f"{r['train_seconds'] / 60:.1f} min" + (f" (+{r['search_seconds'] / 60:.1f} min search)"
                                                    if "search_seconds" in r else "")
        md.append(f"| {label} | {r['set5_psnr_db']:.2f} | {r['set14_psnr_db']:.2f} | "
                  f"{r['set14_psnr_db'] - b['Set14']:+.2f} | {t} |")
    zoo = OUT / "zoo_weights.json"
    if zoo.is_file() and ENTRY in json.loads(zoo.read_text())["entries"]:
        z = json.loads(zoo.read_text())["entries"][ENTRY]
        it = z["config"]["epochs"] * z["config"]["iters"]
        md += ["", f"Longer run of `default`: the shipped {ENTRY} ({it} iterations, "
               f"{z['train_seconds'] / 60:.0f} min): Set5 {z['scores']['Set5']['psnr_db']:.2f}, "
               f"Set14 {z['scores']['Set14']['psnr_db']:.2f} dB."]
    (OUT / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
