"""What the hostile tests' child processes wrap their data in to stop at a known point and wait there.

The children run as scripts from ``tmp_path``, with the repository on ``PYTHONPATH`` to import this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset


class Stalling(Dataset):
    """``inner``'s items, calling ``stall(i)`` before item ``i``: it may block, where the test signals the child."""

    def __init__(self, inner: Any, stall: Callable[[int], None]) -> None:
        self.inner = inner
        self.stall = stall

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> Any:
        self.stall(i)
        return self.inner[i]
