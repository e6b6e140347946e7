"""Multi-process training helpers (torchrun, data parallel).

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
process group uses NCCL on GPUs and gloo on CPU. Rank 0 alone logs and writes files; every
rank calls the collectives below in the same order (a rank that skips one deadlocks the others).

:func:`shutdown` must really end the process group: if anything still holds it, gloo's worker
threads are still running when the interpreter exits, and a process exiting with them aborts
now and then (SIGABRT, "terminate called without an active exception", about 1 run in 20 of
tests/test_ddp.py). Two things held it: ``torch._dynamo`` imported after the group exists
(AdamW's constructor imports it lazily), so :func:`init_distributed` imports it first; and
``DistributedDataParallel``'s reducer, so gradients are averaged by one explicit all-reduce
per step instead (:func:`average_gradients`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "barrier", "all_reduce_sum", "all_gather_objects",
           "broadcast_module", "average_gradients", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        import torch._dynamo  # noqa: F401, PLC0415 - imported after the group exists it keeps the group alive
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (identity for one process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank (in place)."""
    if info.enabled:
        with torch.no_grad():
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)


def average_gradients(params, info: DistInfo) -> None:
    """Replace each gradient by its mean over ranks: one flat all-reduce per dtype and device
    (a parameter without a gradient contributes zeros, so every rank sends the same sizes)."""
    if not info.enabled:
        return
    groups: dict = {}
    for p in params:
        if p.requires_grad:
            groups.setdefault((p.dtype, p.device), []).append(p)
    for group in groups.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(info.world_size)
        offset = 0
        for p in group:
            p.grad = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
