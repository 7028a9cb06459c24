"""Sampling search on Optuna (seeds 004 and 002): each trial one architecture of the space,
scored by the one-shot supernet's PSNR estimate and by its cost, on the engine's samplers.

Strategies: ``evolution`` (NSGA-II, the PSNR-latency front; seed 004 evolves on measured
latency), ``bayes`` (Optuna's multi-objective TPE: BOMP-NAS's Bayesian optimisation) and
``random`` (the floor). Cost: the latency table's prediction for a backend when a table is
given (``bench bitops --table-json``); or the latency measured live (``latency_live``: each
candidate exported with initialised weights and timed in that runtime, on this machine or
an emulated aarch64 one, as ``bench latency`` times it); else BitOps. ``latency_budget`` is a constraint
(trials over it are infeasible, and the samplers steer away). The best candidates of the
feasible front then get a short quantization-aware fine-tune from their inherited weights
(BOMP-NAS's QAFT) and their real PSNR.

How a trial's PSNR is estimated (``estimate``, ``oneshot.Finetune``): seed 004's one-shot
estimate (the supernet's weights inherited and recalibrated, no steps), the same followed by
a short fine-tune, or a short stand-alone training from initialised weights and no supernet
(BOMP-NAS's per-candidate training). On the mobile space the supernet's weights rank worse
than initialised ones (``benchmarks/results/oneshot_rules.md``: Kendall tau against 600
stand-alone steps 0.03-0.30 recalibrated, 0.15-0.45 fine-tuned 300 steps, 0.64 trained 300
steps from initialisation), so the command line defaults to the last.

Everything lives beside ``found.json``: the supernet (``.oneshot.pt``), the Optuna study
(``.optuna.db``, SQLite: a stopped search resumes with its trials), the fine-tuned
candidates (``.front/``) and the front plot (``.front.png``). ``found.json`` is the
fine-tuned candidate of best PSNR within the budget.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .._io import atomic_path
from ..errors import BadInput
from .oneshot import ESTIMATES, Finetune, OneShotConfig, estimate_psnr, train_oneshot

STRATEGIES = ("evolution", "bayes", "random")


def _new_constraints() -> bool:
    try:
        import optuna
    except ImportError:
        return False
    return hasattr(optuna.trial.Trial, "set_constraint")


NEW_CONSTRAINTS = _new_constraints()


@dataclass(frozen=True)
class SamplingConfig:
    strategy: str = "evolution"
    trials: int = 40
    oneshot: OneShotConfig = field(default_factory=OneShotConfig)
    estimate: Finetune = field(default_factory=lambda: ESTIMATES["train"])  # how each trial is scored
    latency_table: str | None = None
    latency_backend: str = "onnxruntime"
    latency_live: str | None = None         # a RUNTIMES name: measure each candidate there instead
    latency_target: str | None = None       # with latency_live: "aarch64[:CPU]" (emulated) or None (this machine)
    latency_size: tuple[int, int] = (128, 128)  # LR size of the live measurement
    latency_runs: int = 10
    latency_budget: float | None = None     # ms (with a table or live) or GBitOps (neither)
    top: int = 3                            # front candidates fine-tuned
    qaft_iters: int = 200
    calib_batches: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise BadInput(f"--strategy must be dnas or one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.trials < 1 or self.top < 1:
            raise BadInput("--trials and --top must be at least 1")
        if self.latency_live and self.latency_table:
            raise BadInput("--latency-live and --latency-table: choose one cost")
        if self.latency_target and not self.latency_live:
            raise BadInput("--latency-target needs --latency-live RUNTIME")
        if self.latency_live:
            from ..runtimes import RUNTIMES

            live = [n for n, r in RUNTIMES.items() if r.suffix in (".onnx", ".tflite")]  # what a candidate is exported as
            if self.latency_live not in live:
                raise BadInput(f"--latency-live must be one of {', '.join(live)}, got {self.latency_live!r}")
            if self.latency_target:
                from ..emulation.aarch64 import parse_target

                parse_target(self.latency_target)

    @property
    def cost_unit(self) -> str:
        return "ms" if self.latency_table or self.latency_live else "GBitOps"


def sampler(cfg: SamplingConfig, constraints):
    import optuna

    if NEW_CONSTRAINTS:  # Optuna 5 reads the constraints each trial sets (Trial.set_constraint)
        constraints = None

    if cfg.strategy == "evolution":
        return optuna.samplers.NSGAIISampler(seed=cfg.seed, population_size=max(4, min(20, cfg.trials // 3)),
                                             constraints_func=constraints)
    if cfg.strategy == "bayes":
        return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=max(2, cfg.trials // 4),
                                          constraints_func=constraints, multivariate=True)
    return optuna.samplers.RandomSampler(seed=cfg.seed)


def paths(found: str | Path) -> dict[str, Path]:
    f = Path(found)
    return {"oneshot": f.with_name(f.stem + ".oneshot.pt"), "db": f.with_name(f.stem + ".optuna.db"),
            "front": f.with_name(f.stem + ".front"), "plot": f.with_name(f.stem + ".front.png"),
            "trials": f.with_name(f.stem + ".trials.json"), "live": f.with_name(f.stem + ".live")}


def sampling_search(cfg: SamplingConfig, pairs, val_pairs, found: str | Path, progress: bool = True,
                    log: Callable[[str], None] = print, name: str | None = None) -> dict:
    import optuna

    from ..cost import summary
    from ..data import PairStore, PatchDataset, patch_loader
    from ..spec import ArchSpec, LayerSpec, save

    found = Path(found)
    P = paths(found)
    t0 = time.perf_counter()
    table = None
    if cfg.latency_table:
        from ..cost.latency import load as load_table, predict

        table = load_table(cfg.latency_table)
    if cfg.estimate.needs_supernet:
        net = train_oneshot(cfg.oneshot, pairs, P["oneshot"], progress, log)
    else:  # the space's choices only: every candidate trains from initialised weights
        from .oneshot import build_supernet

        net = build_supernet(cfg.oneshot).eval()
    oneshot_s = time.perf_counter() - t0
    oc = cfg.oneshot
    store = pairs if isinstance(pairs, PairStore) else PairStore(pairs=list(pairs))
    calib = [b for b, _ in patch_loader(PatchDataset(store, oc.scale, oc.patch, oc.seed + 7,
                                                     cfg.calib_batches * oc.batch), oc.batch)]
    template = net.template
    slots = net.slots

    def spec_of(choice: dict) -> ArchSpec:
        layers = tuple(LayerSpec(s.name, choice[f"{s.name}.op"], choice[f"{s.name}.bits"], choice[f"{s.name}.bits"],
                                 choice.get(f"{s.name}.width")) for s in slots)
        return ArchSpec(space=template.space, scale=template.scale, channels=template.channels,
                        blocks=template.blocks, layers=layers, adq=template.adq, anchor=template.anchor)

    live = LiveLatency(cfg, P["live"]) if cfg.latency_live else None

    def cost(spec) -> float:
        if table is not None:
            return float(predict(table, spec, cfg.latency_backend))
        if live is not None:
            return live(spec)
        return summary(spec)["bitops_32x32"] / 1e9

    def constraints(trial) -> list[float]:
        return [trial.user_attrs.get("over_budget", 0.0)]

    def objective(trial) -> tuple[float, float]:
        choice = {}
        for s, layer in zip(slots, net.mixed.values()):
            choice[f"{s.name}.op"] = trial.suggest_categorical(f"{s.name}.op", list(layer.ops))
            choice[f"{s.name}.bits"] = trial.suggest_categorical(f"{s.name}.bits", list(layer.bits))
            if layer.widths:
                choice[f"{s.name}.width"] = trial.suggest_categorical(f"{s.name}.width", list(layer.widths))
        spec = spec_of(choice)
        c = cost(spec)
        over = 0.0 if cfg.latency_budget is None else c - cfg.latency_budget
        trial.set_user_attr("over_budget", over)
        if NEW_CONSTRAINTS:
            trial.set_constraint("latency_budget", over)
        return estimate_psnr(net, spec, calib, val_pairs, cfg.estimate, store), c

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=cfg.strategy, storage=f"sqlite:///{P['db']}", load_if_exists=True,
                                directions=["maximize", "minimize"], sampler=sampler(cfg, constraints))
    done = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    if done:
        log(f"{cfg.strategy}: {done} trials already in {P['db'].name}")
    t1 = time.perf_counter()
    if cfg.trials > done:
        from .._progress import bar

        b = bar(cfg.trials - done, cfg.strategy, progress)
        study.optimize(objective, n_trials=cfg.trials - done, callbacks=[lambda s, t: b.update(1)])
        b.close()
    search_s = time.perf_counter() - t1
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    feasible = [t for t in trials if t.user_attrs.get("over_budget", 0.0) <= 0]
    front = _front(feasible)
    log(f"{cfg.strategy}: {len(trials)} trials, {len(feasible)} within budget, front of {len(front)}")
    # QAFT: the front's best estimated PSNRs, fine-tuned from their inherited weights.
    chosen = sorted(front, key=lambda t: -t.values[0])[:cfg.top]
    P["front"].mkdir(exist_ok=True)
    results = []
    for k, t in enumerate(chosen):
        spec = spec_of(t.params).with_(name=f"{name or found.stem}_{cfg.strategy}_{t.number}",
                                       description=f"{cfg.strategy} search (Optuna), trial {t.number}")
        psnr, ck = _qaft(net, spec, store, val_pairs, P["front"] / f"trial{t.number}.pt", cfg, log)
        spec = spec.with_(search={"strategy": cfg.strategy, "trial": t.number, "estimated_psnr_db": t.values[0],
                                  "qaft_psnr_db": psnr, "cost": t.values[1],
                                  "cost_unit": cfg.cost_unit, "cost_source": _cost_source(cfg),
                                  "latency_budget": cfg.latency_budget})
        spec = spec.with_(cost=summary(spec))
        save(spec, P["front"] / f"trial{t.number}.json")
        results.append({"trial": t.number, "estimated_psnr_db": t.values[0], "qaft_psnr_db": psnr,
                        "cost": t.values[1], "found": str(P["front"] / f"trial{t.number}.json"), "checkpoint": str(ck)})
    if not results:
        raise BadInput(f"{cfg.strategy}: no trial within --latency-budget {cfg.latency_budget}")
    best = max(results, key=lambda r: r["qaft_psnr_db"])
    with atomic_path(found) as tmp:
        Path(tmp).write_text(Path(best["found"]).read_text())
    out = {"strategy": cfg.strategy, "config": _jsonable(asdict(cfg)), "oneshot_s": oneshot_s, "search_s": search_s,
           "wall_s": time.perf_counter() - t0, "cost_unit": cfg.cost_unit, "cost_source": _cost_source(cfg),
           "trials": [{"number": t.number, "estimated_psnr_db": t.values[0], "cost": t.values[1],
                       "feasible": t.user_attrs.get("over_budget", 0.0) <= 0, "params": t.params} for t in trials],
           "front": [t.number for t in front], "finetuned": results, "best": best}
    with atomic_path(P["trials"]) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1) + "\n")
    _plot(out, P["plot"])
    return out


def _cost_source(cfg: SamplingConfig) -> str:
    if cfg.latency_table:
        return f"latency table {Path(cfg.latency_table).name}, {cfg.latency_backend}"
    if cfg.latency_live:
        where = f"{cfg.latency_target} (emulated under qemu)" if cfg.latency_target else "this machine"
        return (f"measured: {cfg.latency_live} on {where}, {cfg.latency_size[0]}x{cfg.latency_size[1]}, "
                f"one thread, median of {cfg.latency_runs}")
    return "BitOps at 32x32"


class LiveLatency:
    """A candidate's latency measured in a runtime: exported with initialised weights (the
    speed of integer kernels does not depend on the values), timed on one LR image, median
    of ``latency_runs`` after two warm-up runs. Measured once per architecture, kept in
    ``folder/latency.json`` so that a resumed search does not time them again."""

    def __init__(self, cfg: SamplingConfig, folder: Path):
        self.cfg, self.folder = cfg, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "latency.json"
        self.known = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.env = self.cpu = None
        if cfg.latency_target:
            from ..emulation import aarch64

            self.cpu, self.env = aarch64.parse_target(cfg.latency_target), aarch64.load()

    def __call__(self, spec) -> float:
        from ..bench.bitops import export_architecture
        from ..bench.latency import measure, measure_emulated
        from ..runtimes import RUNTIMES

        k = json.dumps([[l.op, l.w_bits, l.a_bits, l.width] for l in spec.layers])
        if k not in self.known:
            c = self.cfg
            fmt = RUNTIMES[c.latency_live].suffix[1:]
            _, onnx_path, tfl_path = export_architecture(spec.with_(name="candidate"), c.latency_size, self.folder,
                                                         (fmt,))
            path = onnx_path or tfl_path
            row = (measure_emulated(self.env, self.cpu, path, c.latency_live, c.latency_size, 1, c.latency_runs, 2)
                   if self.env else measure(path, c.latency_live, c.latency_size, 1, c.latency_runs, 2, isolate=False))
            self.known[k] = row.median_ms
            with atomic_path(self.path) as tmp:
                Path(tmp).write_text(json.dumps(self.known))
        return float(self.known[k])


def _front(trials):
    """Non-dominated trials (maximise PSNR, minimise cost)."""
    return [t for t in trials if not any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1]
                                         and o.values != t.values for o in trials)]


def _qaft(net, spec, store, val_pairs, ck: Path, cfg: SamplingConfig, log) -> tuple[float, Path]:
    """A short quantization-aware fine-tune of ``spec`` from the supernet's weights."""
    import torch

    from ..checkpoint import load_checkpoint
    from ..train import TrainConfig, train, validate
    from ..spaces import build_model
    from .inherit import inherit_from

    if not (ck.is_file() and load_checkpoint(ck).calibrated):
        oc = cfg.oneshot
        inherited = cfg.estimate.needs_supernet  # else from initialised weights, as the estimate trained
        tcfg = TrainConfig(epochs=1, iters=cfg.qaft_iters, batch=oc.batch, patch=oc.patch,
                           lr=oc.lr / 4 if inherited else cfg.estimate.lr,
                           warmup=0.0 if inherited else cfg.estimate.warmup, seed=cfg.seed)
        torch.manual_seed(cfg.seed)
        model = build_model(spec)
        if inherited:
            inherit_from(model, spec, net, "qaft")
        train(spec, store, ck, tcfg, progress=False, log=lambda m: None, model=model)
    ck_ = load_checkpoint(ck)
    return validate(ck_.model, val_pairs, spec.scale), ck


def _jsonable(d):
    return json.loads(json.dumps(d, default=list))


def _plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    tr = out["trials"]
    ax.scatter([t["cost"] for t in tr], [t["estimated_psnr_db"] for t in tr], s=12, c="0.6", label="trials (one-shot)")
    fr = [t for t in tr if t["number"] in out["front"]]
    ax.scatter([t["cost"] for t in fr], [t["estimated_psnr_db"] for t in fr], s=20, c="C0", label="front")
    ft = out["finetuned"]
    ax.scatter([r["cost"] for r in ft], [r["qaft_psnr_db"] for r in ft], marker="*", s=80, c="C3",
               label="fine-tuned (QAFT)")
    budget = out["config"].get("latency_budget")
    if budget is not None:
        ax.axvline(budget, color="C3", ls="--", lw=1, label="budget")
    ax.set_xlabel(f"cost ({out['cost_unit']})")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{out['strategy']} search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
