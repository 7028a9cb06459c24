"""``qnas-deploy search``: the QuantNAS loop (Algorithm 1) with checkpoints and resume.

Each iteration updates the alphas on a batch of one half of the training images with
``L1 + eta * Lcq + mu(t) * entropy`` (Adam, fixed lr 3e-4, no weight decay), then the
weights on a batch of the other half with L1 (SGD, momentum 0.9, cosine lr from 1e-3,
weight decay 3e-7), as appendix D. The state after every epoch is a checkpoint
(``weights_only`` loadable); ``resume`` continues from it and, with the same seed, ends
exactly where an uninterrupted run ends. Ctrl-C saves the state inside the epoch too;
resuming from there repeats the interrupted iteration, so that run is close to, not
bit-identical with, an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_path, check_writable
from ..cost.latency import load as load_table, search_costs
from ..errors import BadInput
from .config import SearchConfig
from .losses import bitops_costs, entropy, entropy_weight, expected_cost, uniform_cost
from .supernet import Supernet

CHECKPOINT_FORMAT = "qnas-deploy/search-checkpoint"

@dataclass
class SearchResult:
    spec: object
    history: list[dict]
    found: str
    seconds: float


@dataclass
class _Run:
    """What a search trains and steps, and where it stands: a checkpoint holds all of it."""
    cfg: SearchConfig
    net: Supernet
    keys: list[str]                 # the searchable layers, in the order of ``costs``
    costs: list[torch.Tensor]       # per layer, ``[operations, bits]``: BitOps or a table's ms
    norm: float                     # the expected cost at uniform alphas: ``Lcq`` is 1.0 there
    samplers: list                  # [weights' half, alphas' half]
    opt_w: torch.optim.Optimizer
    opt_a: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    device: str
    history: list[dict] = field(default_factory=list)
    epoch: int = 0                  # the first epoch still to run
    resume_iter: int = 0            # iterations of ``epoch`` done before a Ctrl-C, and their sums
    resume_sums: dict = field(default_factory=dict)


def _split(pairs: list) -> tuple[list, list]:
    if len(pairs) < 2:
        raise BadInput("search needs at least 2 training images (weights and alphas train on disjoint halves)")
    return pairs[0::2], pairs[1::2]


def embedded_pairs(scale: int):
    """HR/LR pairs from scikit-image's bundled photographs (no download needed)."""
    from skimage import data as skdata

    from ..data import Pair
    from ..imresize import imresize

    pairs = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "hubble_deep_field"):
        try:
            hr = getattr(skdata, name)()
        except Exception:  # noqa: BLE001 - an image missing from this scikit-image version
            continue
        if hr.ndim != 3 or hr.shape[2] < 3:
            continue
        hr = np.ascontiguousarray(hr[..., :3].astype(np.uint8))
        hr = hr[: hr.shape[0] - hr.shape[0] % scale, : hr.shape[1] - hr.shape[1] % scale]
        pairs.append(Pair(name, hr, imresize(hr, 1 / scale)))
    return pairs


def checkpoint_path(found: str | Path) -> Path:
    found = Path(found)
    return found.with_name(found.stem + ".search.pt")


def output_paths(found: str | Path) -> list[Path]:
    """Every file a search writes: found.json, its checkpoint, history and alphas' plot."""
    found = Path(found)
    return [found, checkpoint_path(found), found.with_name(found.stem + ".history.json"),
            found.with_name(found.stem + ".alphas.png")]


def search(cfg: SearchConfig, pairs: list, found: str | Path, resume: bool = False, device: str = "cpu",
           progress: bool = True, log: Callable[[str], None] = print, name: str | None = None) -> SearchResult:
    """Search with ``cfg`` on ``pairs`` and write found.json (and the files beside it,
    :func:`output_paths`) to ``found``; the architecture is called ``name`` (default: the
    file's stem)."""
    check_writable(*output_paths(found))
    found = Path(found)
    ck = checkpoint_path(found)
    t0 = time.perf_counter()
    run = _setup(cfg, pairs, device)
    if resume:
        _resume(run, ck, log)
    for epoch in range(run.epoch, cfg.epochs):
        _run_epoch(run, epoch, ck, progress, log)
    spec = _finish(run, found, name or found.stem)
    return SearchResult(spec, run.history, str(found), time.perf_counter() - t0)


def _setup(cfg: SearchConfig, pairs: list, device: str) -> _Run:
    """The supernet, its cost tensors, the two halves' samplers, the optimisers and the schedule.

    The order is part of the result: the seed is set before the supernet draws its weights."""
    from ..data import PatchSampler

    torch.manual_seed(cfg.seed)
    net = Supernet(cfg.space, cfg.bits, cfg.mode, cfg.channels, cfg.blocks, cfg.scale, anchor=cfg.anchor)
    net.measure_sizes()
    keys = list(net.mixed)
    costs = _costs(cfg, net, keys)
    norm = uniform_cost(costs)
    net.to(device)
    half_w, half_a = _split(pairs)
    samplers = [PatchSampler(half_w, cfg.scale, cfg.patch, seed=cfg.seed),
                PatchSampler(half_a, cfg.scale, cfg.patch, seed=cfg.seed + 1)]
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_a = torch.optim.Adam(net.alpha_parameters(), lr=cfg.alpha_lr, weight_decay=0.0)
    total = cfg.epochs * cfg.iters
    sched = torch.optim.lr_scheduler.LambdaLR(opt_w, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    return _Run(cfg, net, keys, costs, norm, samplers, opt_w, opt_a, sched, device)


def _costs(cfg: SearchConfig, net: Supernet, keys: list[str]) -> list[torch.Tensor]:
    """What each layer's alphas are penalised by: eq. 8's BitOps, or the latency table's
    milliseconds (its space and backend were checked with the settings)."""
    if not cfg.latency_table:
        return bitops_costs([net.edge_cost[k] for k in keys], net.bits)
    return search_costs(load_table(cfg.latency_table), net.slots, [net.mixed[k].ops for k in keys], net.bits,
                        cfg.latency_backend)


def _state(run: _Run, epoch: int, it: int = 0, sums: dict | None = None) -> dict:
    # ``it``/``sums``: an epoch interrupted after ``it`` iterations (Ctrl-C) resumes there.
    return {"format": CHECKPOINT_FORMAT, "config": json.dumps(asdict(run.cfg)), "epoch": epoch, "iter": it,
            "sums": json.dumps(sums or {}), "history": json.dumps(run.history), "model": run.net.state_dict(),
            "opt_w": run.opt_w.state_dict(), "opt_a": run.opt_a.state_dict(), "sched": run.sched.state_dict(),
            "samplers": [s.get_state() for s in run.samplers], "torch_rng": torch.get_rng_state()}


def _save(run: _Run, ck: Path, epoch: int, it: int = 0, sums: dict | None = None) -> None:
    with atomic_path(ck) as tmp:
        torch.save(_state(run, epoch, it, sums), tmp)


def _load_state(path: Path) -> dict:
    import pickle
    import zipfile

    if not zipfile.is_zipfile(path):
        raise BadInput(f"{path}: not a search checkpoint (not a PyTorch zip archive)")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own text here suggests weights_only=False, which would run the file's code.
        raise BadInput(f"{path}: refused to load: it holds objects other than tensors, numbers and strings, "
                       "and checkpoints are loaded with weights_only=True") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise BadInput(f"{path}: not a search checkpoint ({_first_line(e)})") from None
    if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
        raise BadInput(f"{path}: not a search checkpoint")
    return st


def _first_line(e: Exception, limit: int = 160) -> str:
    """An exception's first line, cut at a word (with "...") past ``limit`` characters:
    torch's errors run to paragraphs, and a cut mid-word reads as garbage."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch colours some of its messages
    text = (text.splitlines() or [""])[0].strip() or type(e).__name__
    if len(text) <= limit or " " not in text[:limit + 1]:
        return text
    return text[:limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."


def _resume(run: _Run, ck: Path, log: Callable[[str], None]) -> None:
    """Put ``run`` where the checkpoint ``ck`` left it: weights, optimisers, schedule,
    samplers, RNG, history, and the epoch (and iteration, after a Ctrl-C) to go on from."""
    if not ck.is_file():
        raise BadInput(f"--resume: no search checkpoint at {ck}")
    st = _load_state(ck)
    if json.loads(st["config"]) != json.loads(json.dumps(asdict(run.cfg))):
        raise BadInput(f"--resume: {ck} was made with other settings; rerun with the same options")
    run.net.load_state_dict(st["model"])
    run.opt_w.load_state_dict(st["opt_w"])
    run.opt_a.load_state_dict(st["opt_a"])
    run.sched.load_state_dict(st["sched"])
    for s, g in zip(run.samplers, st["samplers"]):
        s.set_state(g)
    torch.set_rng_state(st["torch_rng"])
    run.epoch, run.history = st["epoch"], json.loads(st["history"])
    run.resume_iter, run.resume_sums = int(st.get("iter", 0)), json.loads(st.get("sums", "{}"))
    if run.epoch >= run.cfg.epochs:
        raise BadInput(f"--resume: {ck} is already complete ({run.epoch} epochs)")
    log(f"resuming in epoch {run.epoch + 1} at iteration {run.resume_iter}" if run.resume_iter
        else f"resuming from epoch {run.epoch}")


def _run_epoch(run: _Run, epoch: int, ck: Path, progress: bool, log: Callable[[str], None]) -> None:
    """The iterations of ``epoch`` still to do, then its record and checkpoint. Ctrl-C saves
    the iterations done so far, so that ``--resume`` repeats only the interrupted one."""
    from .._progress import bar as progress_bar

    cfg = run.cfg
    run.net.train()
    first, sums = 0, {"l1": 0.0, "lcq": 0.0, "entropy": 0.0}
    if epoch == run.epoch and run.resume_iter:
        first, sums = run.resume_iter, run.resume_sums
    bar = progress_bar(cfg.iters, f"search {epoch + 1}/{cfg.epochs}", progress, iterable=range(first, cfg.iters),
                       initial=first)
    done = first
    try:
        for it in bar:
            loss_w, lcq, ent = _iteration(run, epoch + it / cfg.iters)
            sums["l1"] += loss_w
            sums["lcq"] += lcq
            sums["entropy"] += ent
            bar.set_postfix(loss=f"{loss_w:.4f}", bitops=f"{lcq:.3f}", entropy=f"{ent:.3f}")
            done = it + 1
    except KeyboardInterrupt:
        bar.close()
        _save(run, ck, epoch, done, sums)
        log(f"interrupted: saved epoch {epoch + 1}, iteration {done} to {ck}; continue with --resume")
        raise
    _end_epoch(run, epoch, sums, ck, log)


def _iteration(run: _Run, t: float) -> tuple[float, float, float]:
    """One step of the alphas, then one of the weights, at (fractional) epoch ``t``: the
    weights' L1, the normalised cost term and the mean entropy per layer."""
    lcq, ent = _alpha_step(run, entropy_weight(t, run.cfg.entropy))
    return _weight_step(run), lcq, ent / len(run.keys)


def _alpha_step(run: _Run, mu: float) -> tuple[float, float]:
    """``L1 + eta * Lcq + mu * entropy`` on a batch of the alphas' half; returns ``Lcq`` and the entropy."""
    lr, hr = (t.to(run.device) for t in run.samplers[1].batch(run.cfg.batch))
    alphas = [run.net.mixed[k].alphas() for k in run.keys]
    lcq = expected_cost([a.cpu() for a in alphas], run.costs) / run.norm
    ent = entropy(alphas)
    loss_sr = F.l1_loss(run.net(lr), hr)
    run.opt_a.zero_grad(set_to_none=True)
    (loss_sr + run.cfg.penalty * lcq.to(run.device) + mu * ent).backward()
    run.opt_a.step()
    return lcq.item(), ent.item()


def _weight_step(run: _Run) -> float:
    """L1 on a batch of the weights' half, then the schedule's step; returns the loss."""
    lr, hr = (t.to(run.device) for t in run.samplers[0].batch(run.cfg.batch))
    run.opt_w.zero_grad(set_to_none=True)
    loss = F.l1_loss(run.net(lr), hr)
    loss.backward()
    run.opt_w.step()
    run.sched.step()
    return loss.item()


def _end_epoch(run: _Run, epoch: int, sums: dict, ck: Path, log: Callable[[str], None]) -> None:
    """The epoch's record (mean losses, mu, alphas, the architecture they derive) and its checkpoint."""
    cfg, net = run.cfg, run.net
    rec = {k: v / cfg.iters for k, v in sums.items()}
    rec.update(epoch=epoch + 1, mu=entropy_weight(epoch + 1, cfg.entropy),
               alphas={k: net.mixed[k].alphas().detach().cpu().tolist() for k in run.keys},
               arch=[list(net.mixed[k].choice()) for k in run.keys])
    run.history.append(rec)
    _save(run, ck, epoch + 1)
    log(f"epoch {epoch + 1}/{cfg.epochs}: L1 {rec['l1']:.4f}, Lcq {rec['lcq']:.3f}, "
        f"mean entropy {rec['entropy']:.3f}, mu {rec['mu']:.2e}")


def _finish(run: _Run, found: Path, name: str):
    """found.json from the final alphas (with its cost figures), the history beside it, and the alphas' plot."""
    from ..cost import summary
    from ..spec import save

    cfg, net = run.cfg, run.net
    settings = asdict(cfg)
    settings["bits"] = list(cfg.bits)
    settings["ops"] = {k: list(net.mixed[k].ops) for k in run.keys}
    settings["final_alphas"] = run.history[-1]["alphas"] if run.history else {}
    spec = net.derive(name=name, description=f"QuantNAS search ({cfg.mode}) on {cfg.data}", search=settings)
    spec = spec.with_(cost=summary(spec))
    with atomic_path(found) as tmp:
        save(spec, tmp)
    _, _, hist_path, alphas_path = output_paths(found)
    with atomic_path(hist_path) as tmp:
        Path(tmp).write_text(json.dumps({"config": settings, "epochs": run.history}, indent=1) + "\n")
    plot_alphas(run.history, run.keys, net.bits, net.mixed, alphas_path)
    return spec


def plot_alphas(history: list[dict], keys: list[str], bits, mixed, out: Path, layers: int = 4) -> None:
    """The paper's Figure 9: importance of every edge per epoch, lower bit widths dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = keys[:2] + keys[-2:] if len(keys) > layers else keys
    fig, axes = plt.subplots(1, len(show), figsize=(4 * len(show), 3.2), squeeze=False)
    epochs = [h["epoch"] for h in history]
    for ax, k in zip(axes[0], show):
        a = np.array([h["alphas"][k] for h in history])  # [epochs, ops, bits]
        for i, op in enumerate(mixed[k].ops):
            for j, b in enumerate(bits):
                ax.plot(epochs, a[:, i, j], ls="-" if b == max(bits) else "--", label=f"{op} {b}b")
        ax.set_title(k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("alpha")
        ax.legend(fontsize=5)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
