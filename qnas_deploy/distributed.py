"""Data-parallel training under ``torchrun``: the process group, and the statistics that
must be those of the global batch.

``torchrun --nproc_per_node N qnas-deploy train ...`` starts N processes that each see
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_from_env` joins them (``gloo`` on
CPU, ``nccl`` on CUDA). Each rank trains on its share of every global batch, and
DistributedDataParallel averages the gradients. That alone would leave every statistic a
layer computes over the batch to the rank's share: BatchNorm's batch mean and variance
(ADQ), the ranges the quantizers track (HWGQ's sigma, the 8-bit tensors' max), ADQ's mean
scale. Here they are computed over the global batch, so a run of N processes takes the
same steps as one process with the same global batch (up to the order of float sums):

* a maximum: ``all_reduce(MAX)``, exact in any order;
* a standard deviation: two passes in float64 (sum, then squared deviations), reduced
  across ranks, the same formula with one process;
* BatchNorm in training: over the batch gathered from every rank (autograd-aware
  ``all_gather``), by the same ``F.batch_norm`` one process runs on the whole batch.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

_local = False  # statistics of this rank's tensors only (calibration and validation on rank 0)
_owned = False  # whether init_from_env made the process group (and finish() ends it)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and not _local


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> None:
    """Join the torchrun process group (once); on CUDA each rank takes its local GPU."""
    global _owned
    if not launched() or dist.is_initialized():
        return
    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    _owned = True


def finish() -> None:
    """Wait for every rank (rank 0 writes the last checkpoint), then end the process group
    this module made: a rank that exits while its peers still hold gloo connections can be
    aborted by gloo (SIGABRT)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _owned = False


@contextmanager
def local() -> Iterator[None]:
    """Statistics of this rank's tensors alone while inside."""
    global _local
    was, _local = _local, True
    try:
        yield
    finally:
        _local = was


def global_max(m: torch.Tensor) -> torch.Tensor:
    if active():
        m = m.clone()
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
    return m


def global_mean(m: torch.Tensor) -> torch.Tensor:
    """The mean of a per-rank mean over equal shares."""
    if active():
        m = m.clone()
        dist.all_reduce(m)
        m = m / dist.get_world_size()
    return m


def global_std(x: torch.Tensor) -> torch.Tensor:
    """The unbiased standard deviation of ``x`` over every rank's share (float64 sums)."""
    x = x.detach().double()
    n = torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)
    s = x.sum()
    if active():
        both = torch.stack([s, n])
        dist.all_reduce(both)
        s, n = both[0], both[1]
    mean = s / n
    ss = ((x - mean) ** 2).sum()
    if active():
        dist.all_reduce(ss)
    return torch.sqrt(ss / (n - 1)).float()


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)``; in training under torchrun, over the global batch (this rank's part returned)."""
    if not (bn.training and active()):
        return bn(x)
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x)
    y = bn(torch.cat(parts))
    r = dist.get_rank()
    start = sum(p.shape[0] for p in parts[:r])
    return y[start:start + x.shape[0]]
