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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .._io import atomic_path
from ..errors import BadInput
from .losses import bitops_costs, entropy, entropy_weight, expected_cost, uniform_cost
from .supernet import MODES, Supernet

CHECKPOINT_FORMAT = "qnas-deploy/search-checkpoint"


@dataclass
class SearchConfig:
    space: str = "basic"
    bits: tuple[int, ...] = (4, 8)
    mode: str = "san"
    penalty: float = 1e-3          # eta
    entropy: float = 1e-4          # initial coefficient of mu(t) (appendix G, quantized search)
    epochs: int = 20
    iters: int = 500               # iterations per epoch
    batch: int = 16
    patch: int = 32                # LR patch side
    lr: float = 1e-3
    alpha_lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 3e-7
    channels: int | None = None
    blocks: int | None = None
    scale: int = 4
    seed: int = 0
    data: str = "embedded"
    latency_table: str | None = None   # bench bitops --table-json: measured ms in place of BitOps
    latency_backend: str = "onnxruntime"
    anchor: str = "none"               # "nearest" or "bicubic": the Basic space's input anchor (spec.ANCHORS)

    @classmethod
    def quick(cls, **kw) -> "SearchConfig":
        """Finishes in minutes on two CPU cores: short epochs of small patches, a narrower
        supernet, and learning rates raised so that 72 steps move the alphas visibly."""
        base = dict(epochs=6, iters=12, batch=4, patch=16, channels=12, blocks=2, entropy=1e-2, lr=2e-2,
                    alpha_lr=3e-2)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)


@dataclass
class SearchResult:
    spec: object
    history: list[dict]
    found: str
    seconds: float


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


def _state(net, opt_w, opt_a, sched, samplers, epoch, history, cfg, it: int = 0, sums: dict | None = None) -> dict:
    # ``it``/``sums``: an epoch interrupted after ``it`` iterations (Ctrl-C) resumes there.
    return {"format": CHECKPOINT_FORMAT, "config": json.dumps(asdict(cfg)), "epoch": epoch, "iter": it,
            "sums": json.dumps(sums or {}), "history": json.dumps(history), "model": net.state_dict(), "opt_w": opt_w.state_dict(),
            "opt_a": opt_a.state_dict(), "sched": sched.state_dict(),
            "samplers": [s.get_state() for s in samplers], "torch_rng": torch.get_rng_state()}


def _load_state(path: Path) -> dict:
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise BadInput(f"{path}: not a search checkpoint ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
        raise BadInput(f"{path}: not a search checkpoint")
    return st


def checkpoint_path(found: str | Path) -> Path:
    found = Path(found)
    return found.with_name(found.stem + ".search.pt")


def search(cfg: SearchConfig, pairs: list, found: str | Path, resume: bool = False, device: str = "cpu",
           progress: bool = True, log: Callable[[str], None] = print) -> SearchResult:
    import time

    from tqdm import tqdm

    from ..cost import summary
    from ..data import PatchSampler

    if cfg.mode not in MODES:
        raise BadInput(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    bad = [b for b in cfg.bits if b not in (2, 4, 8, 32)]
    if bad or not cfg.bits:
        raise BadInput(f"--bits must be a subset of 2,4,8,32, got {','.join(map(str, cfg.bits))}")
    found = Path(found)
    if not (found.parent if str(found.parent) else Path(".")).is_dir():
        raise BadInput(f"cannot write {str(found)!r}: folder {str(found.parent)!r} does not exist")
    ck = checkpoint_path(found)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    net = Supernet(cfg.space, cfg.bits, cfg.mode, cfg.channels, cfg.blocks, cfg.scale, anchor=cfg.anchor)
    net.measure_sizes()
    keys = list(net.mixed)
    if cfg.latency_table:
        from ..bench import latency_table as lt

        table = lt.load(cfg.latency_table)
        if table["space"] != cfg.space:
            raise BadInput(f"{cfg.latency_table}: a latency table for the {table['space']!r} space, "
                           f"the search is over {cfg.space!r}")
        costs = lt.search_costs(table, net.slots, [net.mixed[k].ops for k in keys], net.bits, cfg.latency_backend)
    else:
        costs = bitops_costs([net.edge_cost[k] for k in keys], net.bits)
    norm = uniform_cost(costs)
    net.to(device)
    half_w, half_a = _split(pairs)
    samplers = [PatchSampler(half_w, cfg.scale, cfg.patch, seed=cfg.seed),
                PatchSampler(half_a, cfg.scale, cfg.patch, seed=cfg.seed + 1)]
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_a = torch.optim.Adam(net.alpha_parameters(), lr=cfg.alpha_lr, weight_decay=0.0)
    total = cfg.epochs * cfg.iters
    sched = torch.optim.lr_scheduler.LambdaLR(opt_w, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    history: list[dict] = []
    start, start_iter, start_sums = 0, 0, {}
    if resume:
        if not ck.is_file():
            raise BadInput(f"--resume: no search checkpoint at {ck}")
        st = _load_state(ck)
        if json.loads(st["config"]) != json.loads(json.dumps(asdict(cfg))):
            raise BadInput(f"--resume: {ck} was made with other settings; rerun with the same options")
        net.load_state_dict(st["model"])
        opt_w.load_state_dict(st["opt_w"])
        opt_a.load_state_dict(st["opt_a"])
        sched.load_state_dict(st["sched"])
        for s, g in zip(samplers, st["samplers"]):
            s.set_state(g)
        torch.set_rng_state(st["torch_rng"])
        start, history = st["epoch"], json.loads(st["history"])
        start_iter, start_sums = int(st.get("iter", 0)), json.loads(st.get("sums", "{}"))
        if start >= cfg.epochs:
            raise BadInput(f"--resume: {ck} is already complete ({start} epochs)")
        log(f"resuming in epoch {start + 1} at iteration {start_iter}" if start_iter else f"resuming from epoch {start}")
    l1 = torch.nn.L1Loss()
    for epoch in range(start, cfg.epochs):
        net.train()
        sums = {"l1": 0.0, "lcq": 0.0, "entropy": 0.0}
        first = 0
        if epoch == start and start_iter:
            first, sums = start_iter, start_sums
        bar = tqdm(range(first, cfg.iters), desc=f"search {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False, initial=first, total=cfg.iters)
        done = first
        try:
            for it in bar:
                mu = entropy_weight(epoch + it / cfg.iters, cfg.entropy)
                lr_a, hr_a = (t.to(device) for t in samplers[1].batch(cfg.batch))
                alphas = [net.mixed[k].alphas() for k in keys]
                lcq = expected_cost([a.cpu() for a in alphas], costs) / norm
                ent = entropy(alphas)
                loss_sr = l1(net(lr_a), hr_a)
                opt_a.zero_grad(set_to_none=True)
                (loss_sr + cfg.penalty * lcq.to(device) + mu * ent).backward()
                opt_a.step()
                lr_w, hr_w = (t.to(device) for t in samplers[0].batch(cfg.batch))
                opt_w.zero_grad(set_to_none=True)
                loss_w = l1(net(lr_w), hr_w)
                loss_w.backward()
                opt_w.step()
                sched.step()
                sums["l1"] += loss_w.item()
                sums["lcq"] += lcq.item()
                sums["entropy"] += ent.item() / len(keys)
                bar.set_postfix(loss=f"{loss_w.item():.4f}", bitops=f"{lcq.item():.3f}",
                                entropy=f"{ent.item() / len(keys):.3f}")
                done = it + 1
        except KeyboardInterrupt:
            bar.close()
            with atomic_path(ck) as tmp:
                torch.save(_state(net, opt_w, opt_a, sched, samplers, epoch, history, cfg, done, sums), tmp)
            log(f"interrupted: saved epoch {epoch + 1}, iteration {done} to {ck}; continue with --resume")
            raise
        rec = {k: v / cfg.iters for k, v in sums.items()}
        rec.update(epoch=epoch + 1, mu=entropy_weight(epoch + 1, cfg.entropy),
                   alphas={k: net.mixed[k].alphas().detach().cpu().tolist() for k in keys},
                   arch=[list(net.mixed[k].choice()) for k in keys])
        history.append(rec)
        with atomic_path(ck) as tmp:
            torch.save(_state(net, opt_w, opt_a, sched, samplers, epoch + 1, history, cfg), tmp)
        log(f"epoch {epoch + 1}/{cfg.epochs}: L1 {rec['l1']:.4f}, Lcq {rec['lcq']:.3f}, "
            f"mean entropy {rec['entropy']:.3f}, mu {rec['mu']:.2e}")
    settings = asdict(cfg)
    settings["bits"] = list(cfg.bits)
    settings["ops"] = {k: list(net.mixed[k].ops) for k in keys}
    settings["final_alphas"] = history[-1]["alphas"] if history else {}
    spec = net.derive(name=found.stem, description=f"QuantNAS search ({cfg.mode}) on {cfg.data}", search=settings)
    spec = spec.with_(cost=summary(spec))
    from ..spec import save

    with atomic_path(found) as tmp:
        save(spec, tmp)
    hist_path = found.with_name(found.stem + ".history.json")
    with atomic_path(hist_path) as tmp:
        Path(tmp).write_text(json.dumps({"config": settings, "epochs": history}, indent=1) + "\n")
    plot_alphas(history, keys, net.bits, net.mixed, found.with_name(found.stem + ".alphas.png"))
    return SearchResult(spec, history, str(found), time.perf_counter() - t0)


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
