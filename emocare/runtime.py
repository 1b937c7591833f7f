"""Where and how tensors run: device, precision, seeds, DataLoader workers and loaders."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import sys
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA GPU is available; use auto or cpu")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())  # torchrun: the local rank's GPU
    return torch.device("cpu" if name == "auto" else name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_precision(device: torch.device) -> str:
    """``bf16`` on GPUs with native bfloat16 (compute capability >= 8.0), ``fp16`` on older GPUs, ``fp32`` on CPU."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device):
    """Autocast in the precision :func:`choose_precision` picks for ``device`` (none in fp32)."""
    precision = choose_precision(device)
    return torch.autocast("cuda", dtype=AUTOCAST_DTYPES[precision]) if precision != "fp32" else nullcontext()


def resolve_workers(value: int | str, device: torch.device) -> int:
    """DataLoader workers for ``num_workers`` (a number, or ``auto``).

    ``auto``: on CUDA, the cores this process may use (shared by the local ranks) less one for
    the main process, at most 8; on a CPU, 0 up to 4 cores, where decoding in the main process
    measured fastest (the model takes every core), else a quarter of the cores.
    """
    if value != "auto":
        return int(value)
    cores = len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else cores // 4


def to_device(batch, device: torch.device):
    """Move a (nested) batch of tensors to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(*_) -> None:
    """Have Linux SIGKILL this process when its parent dies (a ``worker_init_fn`` or pool initializer).

    Without it a DataLoader worker of a ``kill -9``-ed run lives on for minutes, holding its memory.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def make_loader(ds: Dataset, batch_size: int, collate: Callable | None, device: torch.device,
                num_workers: int | str = 0, shuffle: bool = False, seed: int = 0,
                sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader set up for ``device``: pinned memory and deeper prefetching on CUDA, seeded shuffling."""
    workers = resolve_workers(num_workers, device)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      collate_fn=collate, num_workers=workers, pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
                      worker_init_fn=die_with_parent,
                      prefetch_factor=(4 if device.type == "cuda" else 2) if workers else None)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
