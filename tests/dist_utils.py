"""Spawning worker processes for the torch.distributed tests, without ever hanging the suite."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch.multiprocessing as mp


def spawn(worker: Any, tmp: str, world: int, timeout: float = 120.0) -> None:
    """Run ``worker(rank, tmp)`` in ``world`` processes; fail (never hang) if they do not finish in time."""
    ctx = mp.spawn(worker, args=(tmp,), nprocs=world, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"the {world} worker processes did not finish in {timeout:.0f} s")
