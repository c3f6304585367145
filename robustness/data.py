"""Adapters from what users pass as ``data`` to batches of ``(x, y)`` tensors.

``data`` may be a pair ``(x, y)`` of tensors or NumPy arrays, a ``Dataset`` whose items
are ``(x, y)``, or a ``DataLoader`` yielding ``(x, y)`` batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robustness.errors import InputError
from robustness.validation import check_batch_size

__all__ = ["DataLike", "as_loader", "iterate_batches"]

DataLike = Union[tuple[Any, Any], Dataset, DataLoader]


def _as_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise InputError(f"{what} must be a tensor or NumPy array, got {type(value).__name__}")


def as_loader(data: DataLike, batch_size: int, pin_memory: bool = False) -> Iterable[Any]:
    """A re-iterable source of ``(x, y)`` batches, in a fixed order (``pin_memory`` for fast,
    non-blocking copies to a GPU)."""
    check_batch_size(batch_size)
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, Dataset):
        x = _as_tensor(data[0], "x")
        y = _as_tensor(data[1], "y")
        if x.shape[0] != y.shape[0]:
            raise InputError(f"x has {x.shape[0]} examples but y has {y.shape[0]}: pass one label per input")
        data = TensorDataset(x, y)
        pin_memory = pin_memory and x.device.type == "cpu"  # tensors already on a GPU cannot be pinned
    if isinstance(data, Dataset):
        try:
            size = len(data)  # type: ignore[arg-type]
        except TypeError:
            size = None
        if size == 0:
            raise InputError("the dataset is empty: nothing to evaluate")
        # a generator of its own: iterating a DataLoader draws a base seed, which would otherwise
        # come from (and advance) the caller's global torch RNG
        return DataLoader(data, batch_size=batch_size, shuffle=False, generator=torch.Generator(),
                          pin_memory=pin_memory)
    raise InputError(
        f"data must be an (x, y) pair of tensors, a Dataset or a DataLoader, got {type(data).__name__}"
    )


def iterate_batches(loader: Iterable[Any]) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y)`` tensor batches, checking that each batch has that form."""
    for i, batch in enumerate(loader):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InputError(f"batch {i} is not an (inputs, labels) pair: the data must yield (x, y)")
        x, y = _as_tensor(batch[0], "inputs"), _as_tensor(batch[1], "labels")
        yield x, y
