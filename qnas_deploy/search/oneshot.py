"""One-shot evaluation (seed 004): a fully quantized weight-sharing supernet trained once by
sampling a single path per step, and subnet PSNR estimated from inherited weights.

The supernet is the DNAS one (``supernet.py``) in ``shared`` mode: one set of weights per
operation, a real fake-quantizer per bit width (LSQ weights, HWGQ activations). A path is
one (operation, bits) per searchable layer, and a width per free layer when ``widths`` are
searched (FGNAS's channel search; the widest weights, sliced). Training follows seed 004's
sandwich rule (BigNAS): each step trains the largest path (most MACs, most bits, widest) on
the HR patches, then the smallest and ``random_paths`` uniformly drawn ones on the largest
path's output (in-place distillation), and takes one optimizer step on the summed gradients.
``rule="single"`` trains one uniformly drawn path per step on the HR patches instead: on the
mobile space with the bicubic anchor that collapses (random paths' residuals only hurt at
first, the shared weights learn to switch the residual off, and every subnet then scores
the anchor: Kendall tau 0.03 against stand-alone training); the largest path, trained on
the data every step, keeps the residual alive, and the other paths learn to imitate it.
A candidate is then estimated without training: its weights and the chosen bit widths'
quantizer states are inherited (``inherit.py``), BatchNorm, ADQ and every range are
recalibrated on a few batches (``calibrate.py``), and its PSNR is measured on the
validation images as trained (PyTorch, integer inference).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .._io import atomic_path
from ..errors import BadInput
from .supernet import Supernet

FORMAT = "qnas-deploy oneshot supernet 1"
RULES = ("sandwich", "single")
STARTS = ("inherited", "initialised")


@dataclass(frozen=True)
class OneShotConfig:
    space: str = "mobile"
    bits: tuple[int, ...] = (4, 8)
    channels: int | None = None
    blocks: int | None = None
    scale: int = 4
    anchor: str = "none"
    widths: tuple[int, ...] = ()   # each free layer's width choices (spaces.Space.width_choices); () fixed
    iters: int = 2000
    batch: int = 16
    patch: int = 32
    lr: float = 2e-3
    seed: int = 0
    rule: str = "sandwich"         # sandwich (largest + smallest + random, distilled) or single
    random_paths: int = 2          # sandwich: random paths per step besides the largest and smallest
    # Linear warm-up over this fraction of the steps, as ``train``'s default recipe: Adam at
    # full rate from the first step switches off the ReLUs of the un-normalised mobile chain
    # (mobile_w8a8 itself stays at the anchor after 300 steps without it).
    warmup: float = 0.02

    def __post_init__(self):
        if self.rule not in RULES:
            raise BadInput(f"one-shot rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if not 0 <= self.warmup < 1:
            raise BadInput(f"warmup must be a fraction of the steps in [0, 1), got {self.warmup}")
        if self.random_paths < 0:
            raise BadInput(f"random_paths must be at least 0, got {self.random_paths}")


def build_supernet(cfg: OneShotConfig) -> Supernet:
    from ..spaces import get_space

    why = get_space(cfg.space).width_problem(cfg.widths, cfg.channels, cfg.blocks)
    if why:
        raise BadInput(f"--widths: {why}")
    torch.manual_seed(cfg.seed)
    return Supernet(cfg.space, cfg.bits, "shared", cfg.channels, cfg.blocks, cfg.scale, anchor=cfg.anchor,
                    widths=cfg.widths)


def sample_path(net: Supernet, rng: np.random.Generator) -> None:
    for layer in net.mixed.values():
        path = (int(rng.integers(len(layer.ops))), int(rng.integers(len(layer.bits))))
        layer.path = path + (int(rng.integers(len(layer.widths))),) if layer.widths else path


def lr_factor(cfg: OneShotConfig, it: int) -> float:
    """The learning rate at step ``it`` over ``cfg.lr``: linear warm-up, then cosine to zero."""
    from ..train import warmup_cosine

    return warmup_cosine(it, cfg.iters, cfg.warmup)


def extreme_path(net: Supernet, largest: bool) -> None:
    """The largest (most MACs, most bits, widest) or the smallest path of every layer."""
    pick = np.argmax if largest else np.argmin
    for layer in net.mixed.values():
        path = (int(pick(layer.macs((8, 8)).numpy())), int(pick(layer.bits)))
        layer.path = path + (int(pick(layer.widths)),) if layer.widths else path


def train_step(net: Supernet, cfg: OneShotConfig, lr_b: torch.Tensor, hr_b: torch.Tensor,
               rng: np.random.Generator) -> float:
    """Gradients of one step (the caller zeroes them before and steps after); the loss of the
    path trained on the HR patches."""
    loss_fn = nn.L1Loss()
    if cfg.rule == "single":
        sample_path(net, rng)
        loss = loss_fn(net(lr_b), hr_b)
        loss.backward()
        return float(loss.detach())
    extreme_path(net, largest=True)
    sr = net(lr_b)
    loss = loss_fn(sr, hr_b)
    loss.backward()
    target = sr.detach()
    for k in range(1 + cfg.random_paths):
        if k == 0:
            extreme_path(net, largest=False)
        else:
            sample_path(net, rng)
        loss_fn(net(lr_b), target).backward()
    return float(loss.detach())


def train_oneshot(cfg: OneShotConfig, pairs, out: str | Path, progress: bool = True,
                  log: Callable[[str], None] = print, save_every: int = 200) -> Supernet:
    """Train the supernet of ``cfg`` on ``pairs``, checkpointed to ``out`` every
    ``save_every`` steps; an existing checkpoint of the same settings is continued."""
    from .._progress import bar
    from ..data import PairStore, PatchDataset, patch_loader

    out = Path(out)
    net = build_supernet(cfg)
    opt = torch.optim.Adam(net.weight_parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(cfg, i))
    start = 0
    if out.is_file():
        st = torch.load(out, map_location="cpu", weights_only=True)
        if st.get("format") != FORMAT or st.get("config") != _cfg_dict(cfg):
            raise BadInput(f"{out}: a one-shot supernet of other settings; remove it or use another output")
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start = int(st["iter"])
        if start >= cfg.iters:
            return _eval_ready(net)
        log(f"one-shot supernet: continuing at step {start}")
    ds = PatchDataset(pairs if isinstance(pairs, PairStore) else PairStore(pairs=list(pairs)), cfg.scale, cfg.patch,
                      cfg.seed, cfg.iters * cfg.batch)
    net.train()
    t0 = time.perf_counter()
    b = bar(cfg.iters - start, "one-shot supernet", progress)
    for it, (lr_b, hr_b) in zip(range(start, cfg.iters), patch_loader(ds, cfg.batch, start * cfg.batch)):
        opt.zero_grad(set_to_none=True)
        # the paths of step ``it`` depend on it alone: a resumed run draws what an uninterrupted one would
        train_step(net, cfg, lr_b, hr_b, np.random.default_rng([cfg.seed, it]))
        opt.step()
        sched.step()
        b.update(1)
        if (it + 1) % save_every == 0 or it + 1 == cfg.iters:
            _save(net, opt, sched, cfg, it + 1, out)
    b.close()
    log(f"one-shot supernet: {cfg.iters - start} steps in {time.perf_counter() - t0:.0f} s")
    return _eval_ready(net)


def _cfg_dict(cfg: OneShotConfig) -> dict:
    d = asdict(cfg)
    d["bits"] = list(cfg.bits)
    d["widths"] = list(cfg.widths)
    if not cfg.widths:  # a supernet saved before widths existed is the same supernet
        del d["widths"]
    if cfg.rule == "single":  # and one saved before the sandwich rule was single-path
        del d["rule"], d["random_paths"]
    if cfg.warmup == 0:  # and without warm-up
        del d["warmup"]
    return d


def _save(net, opt, sched, cfg, it, out: Path) -> None:
    with atomic_path(out) as tmp:
        torch.save({"format": FORMAT, "config": _cfg_dict(cfg), "iter": it, "model": net.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp)


def _eval_ready(net: Supernet) -> Supernet:
    for layer in net.mixed.values():
        layer.path = None
    return net.eval()


def subnet(net: Supernet, spec, calib_batches: list[torch.Tensor]) -> nn.Module:
    """``spec``'s network with the supernet's weights of its path, recalibrated."""
    from ..calibrate import calibrate
    from ..spaces import build_model
    from .inherit import inherit_from

    model = build_model(spec)
    inherit_from(model, spec, net, "one-shot")
    calibrate(model, calib_batches, exact_adds=False)  # an estimate; never exported
    return model.eval()


@dataclass(frozen=True)
class Finetune:
    """A short fine-tune of each inherited candidate before it is scored (0 steps: seed 004's
    estimate, inherited weights recalibrated only). Adam with a linear warm-up over
    ``warmup`` of the steps, then cosine to zero; L1 on the supernet's training patches, the
    same patches for every candidate."""
    iters: int = 0
    lr: float = 5e-4
    warmup: float = 0.05
    batch: int = 8
    patch: int = 24
    seed: int = 11
    start: str = "inherited"   # or "initialised": no supernet, a short stand-alone training (BOMP-NAS)

    def __post_init__(self):
        if self.iters < 0 or self.lr <= 0 or not 0 <= self.warmup < 1:
            raise BadInput(f"fine-tune: steps must be at least 0, lr positive and warm-up in [0, 1), got "
                           f"{self.iters}, {self.lr}, {self.warmup}")
        if self.start not in STARTS:
            raise BadInput(f"fine-tune start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.start == "initialised" and self.iters == 0:
            raise BadInput("an estimate from initialised weights needs fine-tune steps")

    @property
    def needs_supernet(self) -> bool:
        return self.start == "inherited"



# How a candidate is scored, by name (``search --estimate``); the settings measured in
# ``benchmarks/oneshot_rules.py`` (mobile space, batch 8, LR patch 24).
ESTIMATES = {
    "recalibrate": Finetune(),                                   # seed 004: inherited, recalibrated
    "finetune": Finetune(iters=300, lr=1e-3),                    # inherited, then fine-tuned
    "train": Finetune(iters=300, lr=2e-3, start="initialised"),  # no supernet: trained briefly
}


def estimator(name: str, iters: int | None = None, batch: int | None = None, patch: int | None = None) -> Finetune:
    """The estimate ``name`` of :data:`ESTIMATES`, with its steps (and patches) overridden."""
    if name not in ESTIMATES:
        raise BadInput(f"--estimate must be one of {', '.join(ESTIMATES)}, got {name!r}")
    ft = ESTIMATES[name]
    if iters is not None and name == "recalibrate":
        raise BadInput("--estimate-iters: the recalibrate estimate trains nothing")
    kw = {k: v for k, v in (("iters", iters), ("batch", batch), ("patch", patch)) if v is not None}
    return dataclasses.replace(ft, **kw)


def finetune(model: nn.Module, store, scale: int, ft: Finetune) -> nn.Module:
    """``ft.iters`` steps of quantization-aware training of ``model`` in place."""
    from ..data import PatchDataset, patch_loader
    from ..train import warmup_cosine

    if ft.iters == 0:
        return model
    opt = torch.optim.Adam(model.parameters(), lr=ft.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: warmup_cosine(i, ft.iters, ft.warmup))
    model.train()
    ds = PatchDataset(store, scale, ft.patch, ft.seed, ft.iters * ft.batch)
    for _, (lr_b, hr_b) in zip(range(ft.iters), patch_loader(ds, ft.batch)):
        opt.zero_grad(set_to_none=True)
        nn.functional.l1_loss(model(lr_b), hr_b).backward()
        opt.step()
        sched.step()
    return model.eval()


def estimate_psnr(net: Supernet, spec, calib_batches: list[torch.Tensor], val_pairs, ft: Finetune = Finetune(),
                  store=None) -> float:
    """The PSNR estimate of ``spec`` (mean Y PSNR on ``val_pairs``): its weights inherited
    from ``net`` and recalibrated (or initialised, ``ft.start``), then fine-tuned
    ``ft.iters`` steps on ``store``'s patches and recalibrated."""
    from ..calibrate import calibrate
    from ..spaces import build_model
    from ..train import validate

    if ft.start == "initialised":
        torch.manual_seed(ft.seed)
        model = build_model(spec)
        calibrate(model, calib_batches, exact_adds=False)
    else:
        model = subnet(net, spec, calib_batches)
    if ft.iters:
        if store is None:
            raise ValueError("a fine-tuned estimate needs the training patches")
        finetune(model, store, spec.scale, ft)
        calibrate(model, calib_batches, exact_adds=False)
    return validate(model.eval(), val_pairs, spec.scale)
