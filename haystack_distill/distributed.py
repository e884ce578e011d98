"""torch.distributed helpers: which rank this is, joining the process group under ``torchrun``, waiting for
the other ranks. Outside torchrun every helper behaves as a single process (rank 0 of 1). No Haystack import."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Optional, Tuple

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

#: Minutes a rank waits for the others in a collective before torch.distributed gives up (env overrides).
DIST_TIMEOUT_ENV = "HAYSTACK_DISTILL_DIST_TIMEOUT_MINUTES"


def world() -> Tuple[int, int]:
    """(rank, world_size) under torch.distributed, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def ensure_distributed(timeout: Optional[timedelta] = None) -> Tuple[int, int]:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1) and not yet joined.

    Uses NCCL with CUDA, gloo otherwise; a rank waiting longer than ``timeout`` (default: 30 minutes, or
    ``$HAYSTACK_DISTILL_DIST_TIMEOUT_MINUTES``) for the others fails instead of hanging. Returns
    ``(rank, world_size)``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        timeout = timeout or timedelta(minutes=float(os.environ.get(DIST_TIMEOUT_ENV, "30")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
        logger.info("joined torch.distributed: rank %d of %d", dist.get_rank(), dist.get_world_size())
    return world()


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if world()[1] > 1:
        dist.barrier()


def is_main_process() -> bool:
    """True on rank 0 (or without torch.distributed): only it writes outputs."""
    return world()[0] == 0
