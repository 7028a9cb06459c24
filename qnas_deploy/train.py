"""Quantization-aware training of a found architecture (QuantNAS appendix D).

The network is trained from scratch with every quantizer on (LSQ weights, HWGQ
activations, the 8-bit tensor quantizers, ADQ) on random LR/HR patches, L1 loss. Each
epoch ends with a validation PSNR (Y channel) and a checkpoint; ``resume`` continues from
the last one with the same optimizer, schedule and patch stream, so an interrupted run
ends where an uninterrupted one would. Before the final checkpoint is written the model
is calibrated (``calibrate.py``), so it is ready to evaluate and export.
"""
from __future__ import annotations

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
from .data import PatchSampler, Pair
from .errors import BadInput
from .infer import min_input_size, torch_runner
from .runtimes import grey_aware
from .metrics import psnr
from .spaces import build_model
from .spec import ArchSpec

OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Defaults are QuantNAS appendix D: 30 epochs, batch 16, lr 1e-3 with a cosine
    schedule, SGD with momentum 0.9, weight decay 3e-7."""

    epochs: int = 30
    iters: int = 1000          # iterations per epoch
    batch: int = 16
    patch: int = 32            # LR patch side; HR patches are scale times larger
    lr: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 3e-7
    seed: int = 0
    calib_batches: int = 8

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("epochs", "iters", "batch", "patch", "calib_batches"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise BadInput(f"lr must be positive, got {self.lr}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def validate(model: nn.Module, pairs: list[Pair], scale: int, device: str = "cpu") -> float:
    """Mean Y-channel PSNR (``scale`` pixels shaved) of the model in inference mode."""
    was_training = model.training
    run = grey_aware(torch_runner(model, device))
    try:
        return float(np.mean([psnr(run(p.lr), p.hr, scale) for p in pairs]))
    finally:
        model.train(was_training)


def train(spec: ArchSpec, train_pairs: list[Pair], out: str | Path, cfg: TrainConfig,
          val_pairs: list[Pair] | None = None, resume: bool = False, device: str = "cpu",
          progress: bool = True, log: Callable[[str], None] = print,
          on_epoch_end: Callable[[int, dict], None] | None = None) -> Checkpoint:
    """Train ``spec`` and write the checkpoint to ``out`` every epoch; returns the final one."""
    check_writable(out)
    out = Path(out)
    if cfg.patch < min_input_size(spec):
        raise BadInput(f"--patch {cfg.patch}: the {spec.space} space needs LR patches of at least "
                       f"{min_input_size(spec)} pixels")
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
    else:
        torch.manual_seed(cfg.seed)
        model = build_model(spec)
    model.to(device)
    sampler = PatchSampler(train_pairs, spec.scale, cfg.patch, cfg.seed)
    opt = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * cfg.iters)
    if state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler"])
    loss_fn = nn.L1Loss()

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0, total = time.perf_counter(), 0.0
        bar = _bar(cfg.iters, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        for _ in range(cfg.iters):
            lr_b, hr_b = sampler.batch(cfg.batch)
            loss = loss_fn(model(lr_b.to(device)), hr_b.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        bar.close()
        seconds = time.perf_counter() - t0
        entry = {"epoch": epoch + 1, "loss": total / cfg.iters, "seconds": seconds,
                 "patches_per_s": cfg.iters * cfg.batch / seconds}
        if val_pairs:
            entry["val_psnr_db"] = validate(model, val_pairs, spec.scale, device)
        history.append(entry)
        log(_epoch_line(entry))
        record = {"config": asdict(cfg), "epoch": epoch + 1, "history": history}
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "sampler": sampler.get_state()}
        save_checkpoint(out, spec, model, calibrated=False, record=record, state=state)
        if on_epoch_end:
            on_epoch_end(epoch + 1, entry)

    n = calibrate(model, [sampler.batch(cfg.batch)[0].to(device) for _ in range(cfg.calib_batches)])
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
