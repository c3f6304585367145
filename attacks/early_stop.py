"""When to shrink an iterative attack's working batch, without stalling the device.

Iterative attacks drop the samples they have fooled from their working batch (early stop), so
that later steps spend nothing on them. Shrinking needs the number of survivors on the host,
and reading a device value there waits for every kernel queued so far: on a GPU that stall
happens once per step and leaves the device idle while the host catches up.

:class:`Shrinker` decides when to shrink:

* eager (the default on the CPU, where the host and the "device" are the same): it reads the
  mask at once and shrinks as soon as a sample is done, at the cost of nothing;
* deferred (the default on CUDA): it copies the number of survivors to pinned host memory
  asynchronously, records an event, and shrinks at a later step, once the event has completed
  (``Event.query()`` never waits). Meanwhile the done samples ride along in the batch; the
  attacks keep each sample's first fooling iterate, so the extra steps change nothing but
  their cost. The indices are computed on the device from the known count (a stable sort of
  the mask), which needs no synchronisation either.

Shapes: ``done`` is a ``(n,)`` boolean mask aligned with the current working batch.

Example::

    shrink = Shrinker(x.device)
    for step in range(steps):
        ...
        keep = shrink.update(done)
        if keep is not None:  # shrink now; an empty ``keep`` means every sample is done
            x_adv, y0 = x_adv[keep], y0[keep]
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Shrinker"]


class _Ready:
    """Stands in for a CUDA event when the deferred mode runs on the CPU (tests): ready at the next poll."""

    def query(self) -> bool:
        return True


class Shrinker:
    """Tells an iterative attack when to drop its done samples (see the module docstring).

    Args:
        device: the working batch's device.
        deferred: ``None``: deferred on CUDA, eager elsewhere. ``True`` on the CPU emulates the
            deferred mode with a lag of exactly one step (used by the tests).
    """

    def __init__(self, device: torch.device, *, deferred: bool | None = None) -> None:
        self.device = torch.device(device)
        self.deferred = self.device.type == "cuda" if deferred is None else bool(deferred)
        self._mask: Tensor | None = None
        self._count: Tensor | None = None
        self._event: object | None = None

    def update(self, done: Tensor) -> Tensor | None:
        """Call once per step with the current ``done`` mask.

        Returns ``None`` (keep the batch as it is) or the indices of the samples to keep, in
        order (empty: every sample is done). After a shrink, the next ``done`` must be aligned
        with the shrunk batch.
        """
        if not self.deferred:
            keep = (~done).nonzero().squeeze(1)  # one host read; free where host and device are one
            return keep if keep.numel() < done.numel() else None
        keep = None
        if self._mask is not None and self._event.query():  # type: ignore[union-attr]
            mask, survivors = self._mask, int(self._count)  # type: ignore[arg-type]
            self._mask = None
            if survivors < mask.numel():
                keep = torch.argsort(mask.to(torch.uint8), stable=True)[:survivors]  # the False ones, in order
                done = done[keep]
        if self._mask is None:
            self._propose(done)
        return keep

    def _propose(self, done: Tensor) -> None:
        count = (~done).sum()
        if self.device.type == "cuda":
            host = torch.empty((), dtype=count.dtype, pin_memory=True)
            host.copy_(count, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))  # the stream the copy went on, not device 0's
        else:
            host, event = count, _Ready()
        self._mask, self._count, self._event = done, host, event
