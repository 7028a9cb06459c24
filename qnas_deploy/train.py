"""Quantization-aware training of a found architecture.

The network is trained with every quantizer on (LSQ weights, HWGQ activations, the 8-bit
tensor quantizers, ADQ) on random LR/HR patches. Two named recipes (:data:`RECIPES`):
``default``, chosen by measurement (``benchmarks/recipe_study.py``), and ``paper``,
QuantNAS appendix D. Two starts closer to the goal than from scratch: ``init`` (the
weights the search's supernet trained for the chosen path, :mod:`.search.inherit`) and
``float_warmup`` (the first iterations with the quantizers off).

Each epoch ends with a validation PSNR (Y channel) and a checkpoint; ``resume`` continues
from the last one with the same optimizer, schedule and patch stream, so an interrupted
run ends where an uninterrupted one would. Before the final checkpoint is written the
model is calibrated (``calibrate.py``), so it is ready to evaluate and export.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ._io import check_writable
from .calibrate import calibrate
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import Pair, PairStore, PatchDataset, patch_loader
from .errors import BadInput
from .infer import min_input_size, torch_runner
from .runtimes import grey_aware
from .metrics import psnr
from .quant import quantizers_off
from .spaces import build_model
from .spec import ArchSpec

OPTIMIZERS = ("sgd", "adam")
LOSSES = ("l1", "l2")
# Mixed precision: the convolutions in the low precision, every quantizer in float32
# (quant.modules.float32_math). float16 needs loss scaling and a CUDA device.
AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# What each recipe sets; anything given explicitly overrides it. ``default``: Adam at 2e-3
# with a short linear warm-up and a cosine decay to zero converges from 150 iterations to
# tens of thousands (benchmarks/results/recipe_study.md); SGD at 1e-3 (``paper``) barely
# moves a quantized net in a short run (11.65 dB on Set5 after 150 iterations).
RECIPES = {
    "default": dict(epochs=30, iters=1000, batch=16, patch=32, lr=2e-3, optimizer="adam", momentum=0.9,
                    weight_decay=0.0, warmup=0.02, float_warmup=0.0, loss="l1"),
    "paper": dict(epochs=30, iters=1000, batch=16, patch=32, lr=1e-3, optimizer="sgd", momentum=0.9,
                  weight_decay=3e-7, warmup=0.0, float_warmup=0.0, loss="l1"),
}


@dataclass
class TrainConfig:
    """A training run's settings; the defaults are the ``default`` recipe.

    ``warmup`` and ``float_warmup`` are fractions of all iterations: the learning rate
    rises linearly over the first, and the quantizers stay off over the second."""

    epochs: int = 30
    iters: int = 1000          # iterations per epoch
    batch: int = 16
    patch: int = 32            # LR patch side; HR patches are scale times larger
    lr: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup: float = 0.02
    float_warmup: float = 0.0
    loss: str = "l1"
    seed: int = 0
    calib_batches: int = 8
    recipe: str = "default"
    init: str | None = None    # a search's found.json whose supernet weights start the run
    amp: str = "off"           # mixed precision: off, bf16 or fp16 (see AMP)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise BadInput(f"recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.amp not in AMP:
            raise BadInput(f"amp must be one of {', '.join(AMP)}, got {self.amp!r}")
        if self.loss not in LOSSES:
            raise BadInput(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("epochs", "iters", "batch", "patch", "calib_batches"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise BadInput(f"lr must be positive, got {self.lr}")
        for name in ("warmup", "float_warmup"):
            if not 0 <= getattr(self, name) < 1:
                raise BadInput(f"{name} must be a fraction of the run in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_recipe(cls, recipe: str = "default", **overrides) -> "TrainConfig":
        """The recipe's settings with every ``overrides`` value that is not None."""
        if recipe not in RECIPES:
            raise BadInput(f"--recipe {recipe}: choose from {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **{k: v for k, v in overrides.items() if v is not None}}, recipe=recipe)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        if "recipe" not in d:  # a checkpoint from before recipes: appendix D without warm-up
            d = {**RECIPES["paper"], **d, "recipe": "paper"}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def total(self) -> int:
        return self.epochs * self.iters

    @property
    def float_iters(self) -> int:
        return int(round(self.float_warmup * self.total))


def warmup_cosine(it: int, total: int, warmup: float) -> float:
    """A learning-rate factor at step ``it`` of ``total``: a linear warm-up over the fraction
    ``warmup`` of the steps, then a cosine decay to zero over the rest."""
    warm = int(round(warmup * total))
    if it < warm:
        return (it + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(it - warm, total - warm) / max(1, total - warm)))


def lr_factor(cfg: TrainConfig, it: int) -> float:
    """The learning rate at iteration ``it`` over ``cfg.lr`` (:func:`warmup_cosine`)."""
    return warmup_cosine(it, cfg.total, cfg.warmup)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(cfg, i))


def _load_schedule(sched, opt: torch.optim.Optimizer, cfg: TrainConfig, state: dict) -> None:
    if "lr_lambdas" in state:
        sched.load_state_dict(state)
        return
    # A cosine-annealing state from before recipes: the same curve, continued by position.
    sched.last_epoch = int(state["last_epoch"])
    for g in opt.param_groups:
        g["lr"] = cfg.lr * lr_factor(cfg, sched.last_epoch)


def validate(model: nn.Module, pairs: list[Pair], scale: int, device: str = "cpu") -> float:
    """Mean Y-channel PSNR (``scale`` pixels shaved) of the model in inference mode."""
    was_training = model.training
    run = grey_aware(torch_runner(model, device))
    try:
        return float(np.mean([psnr(run(p.lr), p.hr, scale) for p in pairs]))
    finally:
        model.train(was_training)


def train(spec: ArchSpec, train_pairs: list[Pair] | PairStore, out: str | Path, cfg: TrainConfig,
          val_pairs: list[Pair] | None = None, resume: bool = False, device: str = "cpu",
          progress: bool = True, log: Callable[[str], None] = print,
          on_epoch_end: Callable[[int, dict], None] | None = None, workers: int = 0,
          model: nn.Module | None = None) -> Checkpoint:
    """Train ``spec`` and write the checkpoint to ``out`` every epoch; returns the final one.

    ``workers``: loader processes that cut patches while the model trains (the patch
    stream does not depend on it). ``model``: start from this network of ``spec`` (weights
    already set, e.g. inherited from a supernet) instead of a freshly initialised one."""
    from . import distributed

    distributed.init_from_env(device)
    world, rank = distributed.world(), distributed.rank()
    main = rank == 0
    if cfg.batch % world:
        raise BadInput(f"--batch {cfg.batch}: the global batch must divide among the {world} processes")
    if main:
        check_writable(out)
    out = Path(out)
    if cfg.patch < min_input_size(spec):
        raise BadInput(f"--patch {cfg.patch}: the {spec.space} space needs LR patches of at least "
                       f"{min_input_size(spec)} pixels")
    store = train_pairs if isinstance(train_pairs, PairStore) else PairStore(pairs=list(train_pairs))
    start_epoch, history, state = 0, [], {}
    if resume:
        if not out.is_file():
            raise BadInput(f"--resume: {out} does not exist yet (start without --resume)")
        ck = load_checkpoint(out, spec)
        if ck.calibrated:
            raise BadInput(f"--resume: {out} is a finished run (calibrated after its last epoch)")
        stored = TrainConfig.from_dict(ck.record.get("config", {}))
        if stored != cfg:
            log(f"resume: continuing with the run's own settings ({_diff(cfg, stored)})")
        cfg, model, state = stored, ck.model, ck.state
        start_epoch, history = int(ck.record.get("epoch", 0)), list(ck.record.get("history", []))
    elif model is None:
        torch.manual_seed(cfg.seed)
        model = build_model(spec)
        if cfg.init:
            from .search.inherit import inherit_supernet_weights

            n = inherit_supernet_weights(model, spec, cfg.init)
            log(f"init: {n} tensors from the supernet of {cfg.init}")
    model.to(device)
    net = model
    if world > 1:
        if main:
            log(f"data parallel: {world} processes, {cfg.batch // world} patches each per step")
        # Buffers (ranges, BN statistics) are kept equal by computing them over the global
        # batch (distributed.py), not by rank 0's copy; some parameters (quantizer steps in
        # the float warm-up) get no gradient in some steps.
        net = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False,
                                                  find_unused_parameters=cfg.float_iters > 0)
    if not main:
        log, progress = (lambda m: None), False
    ds = PatchDataset(store, spec.scale, cfg.patch, cfg.seed, cfg.total * cfg.batch)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg)  # before the optimizer's state: a new scheduler resets the lr
    if state:
        opt.load_state_dict(state["optimizer"])
        _load_schedule(sched, opt, cfg, state["scheduler"])
    loss_fn = nn.L1Loss() if cfg.loss == "l1" else nn.MSELoss()
    cuda = str(device).startswith("cuda")
    if cfg.amp == "fp16" and not cuda:
        raise BadInput("--amp fp16 needs a CUDA device (on CPU use --amp bf16)")
    # float16 gradients underflow without loss scaling; bfloat16 has float32's exponent range.
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    if state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    dev_type = torch.device(device).type
    elapsed = float(history[-1].get("elapsed_s", 0.0)) if history else 0.0

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0, total = time.perf_counter(), 0.0
        bar = _bar(cfg.iters, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        first = epoch * cfg.iters
        loader = patch_loader(ds, cfg.batch, first * cfg.batch, workers, pin_memory=cuda, rank=rank, world=world)
        for i, (lr_b, hr_b) in zip(range(cfg.iters), loader):
            with quantizers_off(model, first + i < cfg.float_iters), \
                    torch.autocast(dev_type, dtype=AMP[cfg.amp], enabled=cfg.amp != "off"):
                sr = net(lr_b.to(device, non_blocking=cuda))
            loss = loss_fn(sr.float(), hr_b.to(device, non_blocking=cuda))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        bar.close()
        del loader
        if world > 1:  # the loss of the global batch, not of this rank's share
            t = torch.tensor(total)
            torch.distributed.all_reduce(t)
            total = float(t) / world
        seconds = time.perf_counter() - t0
        elapsed += seconds
        entry = {"epoch": epoch + 1, "loss": total / cfg.iters, "seconds": seconds, "elapsed_s": elapsed,
                 "patches_per_s": cfg.iters * cfg.batch / seconds}
        if world > 1:
            entry["processes"] = world
        if val_pairs and main:
            with distributed.local():
                entry["val_psnr_db"] = validate(model, val_pairs, spec.scale, device)
        history.append(entry)
        log(_epoch_line(entry))
        record = {"config": asdict(cfg), "epoch": epoch + 1, "history": history}
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
        if scaler.is_enabled():
            state["grad_scaler"] = scaler.state_dict()
        if main:
            save_checkpoint(out, spec, model, calibrated=False, record=record, state=state)
        if world > 1:
            torch.distributed.barrier()  # the epoch's checkpoint exists before any rank goes on
        if on_epoch_end:
            on_epoch_end(epoch + 1, entry)

    if main:  # rank 0 calibrates and writes the final checkpoint
        with distributed.local():
            result = _finish(spec, model, store, out, cfg, history, val_pairs, device, log)
    else:
        result = Checkpoint(spec, model.cpu().eval(), False, {"config": asdict(cfg), "history": history})
    distributed.finish()
    return result


def _finish(spec, model, store, out, cfg, history, val_pairs, device, log) -> Checkpoint:
    """Calibrate, score and write the final checkpoint."""
    calib = PatchDataset(store, spec.scale, cfg.patch, cfg.seed + 1, cfg.calib_batches * cfg.batch)
    n = calibrate(model, [lr_b.to(device) for lr_b, _ in patch_loader(calib, cfg.batch)])
    record = {"config": asdict(cfg), "epoch": cfg.epochs, "history": history, "calibration_batches": n}
    if val_pairs:
        record["val_psnr_db"] = validate(model, val_pairs, spec.scale, device)
        log(f"calibrated on {n} batches: val PSNR {record['val_psnr_db']:.2f} dB")
    save_checkpoint(out, spec, model, calibrated=True, record=record)
    return Checkpoint(spec, model.cpu().eval(), True, record)


def _bar(total: int, desc: str, enabled: bool):
    from ._progress import bar

    return bar(total, desc, enabled)


def _epoch_line(e: dict) -> str:
    val = f", val PSNR {e['val_psnr_db']:.2f} dB" if "val_psnr_db" in e else ""
    return (f"epoch {e['epoch']}: loss {e['loss']:.4f}{val}, {e['seconds']:.0f} s, "
            f"{e['patches_per_s']:.1f} patches/s")


def _diff(a: TrainConfig, b: TrainConfig) -> str:
    da, db = asdict(a), asdict(b)
    return ", ".join(f"{k}={db[k]} (not {da[k]})" for k in da if da[k] != db[k])
