"""Sweeps of searches on Ray: a grid of QuantNAS searches (penalties x seeds x bit sets),
each then trained and exported, as Ray tasks, one trial per worker.

Ray schedules the trials (locally: a Ray started in this process on this machine; with
``address``: an existing cluster) and retries a trial whose worker dies. A trial keeps all
its state in its own folder of the run folder (the search's and the training's
checkpoints, written every epoch), so a retried trial, or the whole sweep started again
after an interruption, continues from the last checkpoint instead of starting over; a
finished trial (``trial.json``) is not run again. The run folder ends with ``sweep.json``,
``sweep.md`` and ``sweep.png`` (the found architectures' PSNR against BitOps).
"""
from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ._io import atomic_path
from .errors import BadInput


@dataclass(frozen=True)
class SweepConfig:
    space: str = "basic"
    penalties: tuple[float, ...] = (1e-4, 1e-3)
    seeds: tuple[int, ...] = (0,)
    bit_sets: tuple[tuple[int, ...], ...] = ((4, 8),)
    quick: bool = True
    search: dict = field(default_factory=dict)     # other SearchConfig fields (epochs, iters, anchor, ...)
    data: str | None = None                        # search and training images; None: the bundled photographs
    val: str | None = None                         # sets the trained models are scored on
    train_epochs: int = 1                          # 0: search and export only
    train_iters: int = 50
    train: dict = field(default_factory=dict)      # other TrainConfig fields (recipe, batch, patch, ...)
    formats: tuple[str, ...] = ("onnx",)

    def __post_init__(self):
        if not self.penalties or not self.seeds or not self.bit_sets:
            raise BadInput("a sweep needs at least one penalty, one seed and one bit set")
        bad = [f for f in self.formats if f not in ("onnx", "tflite", "ort")]
        if bad:
            raise BadInput(f"--formats: {bad[0]} is not one of onnx, tflite, ort")

    def trials(self) -> list[dict]:
        """One dict per grid point: its name and the search's settings."""
        out = []
        for bits, penalty, seed in itertools.product(self.bit_sets, self.penalties, self.seeds):
            name = f"b{'-'.join(map(str, bits))}_p{penalty:g}_s{seed}"
            out.append({"name": name, "bits": list(bits), "penalty": penalty, "seed": seed})
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        d["bit_sets"] = [list(b) for b in self.bit_sets]
        return json.loads(json.dumps(d))


def run_trial(cfg: dict, trial: dict, folder: str, datasets_root: str | None, threads: int, device: str) -> dict:
    """Search, train and export one grid point in ``folder``, continuing whatever an earlier
    attempt left there. Runs in a Ray worker (or in this process)."""
    import torch

    torch.set_num_threads(threads)
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "attempts.log", "a") as f:
        f.write(f"{os.getpid()} {time.time():.3f}\n")
    attempt = len((d / "attempts.log").read_text().splitlines())
    with open(d / "trial.log", "a") as log_file:
        return _trial(cfg, trial, d, attempt, log_file, datasets_root, device)


def _trial(cfg: dict, trial: dict, d: Path, attempt: int, log_file, datasets_root: str | None, device: str) -> dict:
    from .checkpoint import load_checkpoint
    from .data import load_pairs
    from .search import SearchConfig, embedded_pairs
    from .search import search as run_search
    from .search.run import checkpoint_path

    t0 = time.perf_counter()

    def log(m: str) -> None:
        log_file.write(f"[{time.perf_counter() - t0:6.1f} s] {m}\n")
        log_file.flush()

    kw = dict(cfg["search"], space=cfg["space"], bits=tuple(trial["bits"]), penalty=trial["penalty"],
              seed=trial["seed"], data=cfg["data"] or "embedded")
    scfg = SearchConfig.quick(**kw) if cfg["quick"] else SearchConfig(**kw)
    pairs = load_pairs(cfg["data"], scfg.scale, datasets_root, training=True) if cfg["data"] else embedded_pairs(scfg.scale)
    found = d / "found.json"
    if not found.is_file():
        ck = checkpoint_path(found)
        log(f"attempt {attempt}: search" + (" (resumed)" if ck.is_file() else ""))
        run_search(scfg, pairs, found, resume=ck.is_file(), device=device, progress=False, log=log,
                   name=trial["name"])
    from .spec import load

    spec = load(found)
    result = {**trial, "folder": str(d), "found": str(found), "attempts": attempt,
              "bitops_32x32": spec.cost["bitops_32x32"] if spec.cost else None,
              "layers": {l.name: f"{l.op}@{l.w_bits}" for l in spec.layers}}
    source = str(found)
    if cfg["train_epochs"] > 0:
        from .train import TrainConfig, train

        model = d / "model.pt"
        tcfg = TrainConfig.from_recipe(cfg["train"].get("recipe", "default"), epochs=cfg["train_epochs"],
                                       iters=cfg["train_iters"], seed=trial["seed"],
                                       **{k: v for k, v in cfg["train"].items() if k != "recipe"})
        if not (model.is_file() and load_checkpoint(model).calibrated):
            log(f"attempt {attempt}: train" + (" (resumed)" if model.is_file() else ""))
            train(spec, pairs, model, tcfg, resume=model.is_file(), device=device, progress=False, log=log)
        source = str(model)
        if cfg["val"]:
            from .evaluate import evaluate_sets
            from .infer import grey_aware, torch_runner

            s = evaluate_sets(grey_aware(torch_runner(load_checkpoint(model).model.eval())), cfg["val"].split(","),
                              spec.scale, datasets_root)
            result["psnr_db"] = {k: v["mean"]["psnr_db"] for k, v in s["sets"].items()}
    from .exporters.export import export

    files = []
    for fmt in cfg["formats"]:
        out = d / f"model.{fmt}"
        if not out.is_file():
            log(f"attempt {attempt}: export {fmt}")
            export(source, str(out), fmt=fmt, log=log)
        files.append(str(out))
    result.update(files=files, seconds=time.perf_counter() - t0)
    with atomic_path(d / "trial.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1) + "\n")
    return result


def sweep(cfg: SweepConfig, out: str | Path, parallel: int = 2, cpus_per_trial: int = 1, gpus_per_trial: float = 0,
          retries: int = 2, address: str | None = None, datasets_root: str | None = None, device: str = "cpu",
          progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the grid of ``cfg`` as Ray tasks into the run folder ``out``; returns the summary."""
    import ray

    from ._progress import bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_json = cfg.to_json()
    stored = out / "sweep.config.json"
    if stored.is_file():
        if json.loads(stored.read_text()) != cfg_json:
            raise BadInput(f"{out}: a sweep with other settings ran here (see {stored.name}); use another folder")
    else:
        with atomic_path(stored) as tmp:
            Path(tmp).write_text(json.dumps(cfg_json, indent=1) + "\n")
    trials = cfg.trials()
    done = {t["name"]: json.loads((out / t["name"] / "trial.json").read_text())
            for t in trials if (out / t["name"] / "trial.json").is_file()}
    todo = [t for t in trials if t["name"] not in done]
    log(f"sweep: {len(trials)} trials, {len(done)} already finished, {len(todo)} to run")
    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:  # this machine: room for ``parallel`` trials at once
                # Ray starts its workers at nice 15, for drivers that do the work themselves;
                # here the trials are the work, and would starve behind any other process.
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(num_cpus=parallel * cpus_per_trial, num_gpus=None if gpus_per_trial else 0,
                         include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=retries,
                          retry_exceptions=False)(run_trial)
        pending = {task.remote(cfg_json, t, str(out / t["name"]), datasets_root, cpus_per_trial, device): t["name"]
                   for t in todo}
        b = bar(len(todo), "trials", progress)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(ready[0])
                try:
                    done[name] = ray.get(ready[0])
                    extra = f", {done[name]['attempts']} attempts" if done[name]["attempts"] > 1 else ""
                    log(f"trial {name}: done in {done[name]['seconds']:.0f} s{extra}")
                except Exception as e:  # noqa: BLE001 - a trial that failed past its retries
                    failed[name] = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    log(f"trial {name}: failed ({failed[name]})")
                b.update(1)
        finally:
            b.close()
            if started_here:
                ray.shutdown()
    summary = {"config": cfg_json, "wall_s": time.perf_counter() - t0, "parallel": parallel,
               "trials": [done[t["name"]] for t in trials if t["name"] in done], "failed": failed}
    write_summary(summary, out)
    return summary


def write_summary(summary: dict, out: Path) -> None:
    with atomic_path(out / "sweep.json") as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=1) + "\n")
    rows = summary["trials"]
    sets = sorted({s for r in rows for s in r.get("psnr_db", {})})
    md = ["# Sweep", "", f"{len(rows)} trials finished, {len(summary['failed'])} failed; "
          f"wall time of this run {summary['wall_s']:.0f} s with {summary['parallel']} at once.", "",
          "| trial | bits | penalty | seed | BitOps (32x32) | " + "".join(f"{s} PSNR | " for s in sets)
          + "attempts | seconds |", "|---|---|---|---|---|" + "---|" * len(sets) + "---|---|"]
    for r in rows:
        ps = " | ".join(f"{r['psnr_db'][s]:.2f}" for s in sets)
        md.append(f"| {r['name']} | {','.join(map(str, r['bits']))} | {r['penalty']:g} | {r['seed']} | "
                  f"{(r['bitops_32x32'] or 0) / 1e9:.3f} G | " + (ps + " | " if sets else "")
                  + f"{r['attempts']} | {r['seconds']:.0f} |")
    for name, why in summary["failed"].items():
        md.append(f"| {name} | failed: {why} |")
    with atomic_path(out / "sweep.md") as tmp:
        Path(tmp).write_text("\n".join(md) + "\n")
    if rows and sets:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            ax.scatter(r["bitops_32x32"] / 1e9, r["psnr_db"][sets[0]])
            ax.annotate(r["name"], (r["bitops_32x32"] / 1e9, r["psnr_db"][sets[0]]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
        ax.set_xlabel("GBitOps (32x32 LR)")
        ax.set_ylabel(f"{sets[0]} PSNR (dB)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(out / "sweep.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
