"""Multi-process evaluation and training on ``torch.distributed`` (``torchrun``).

An evaluation is sharded by loader batch: rank ``r`` of ``K`` evaluates the batches ``b`` with
``b % K == r`` (round robin, no padding: every example is evaluated exactly once), rank 0
gathers every rank's :class:`~robustness.records.BatchRecord`, assembles the report, runs the
sanity checks and shares the report with every rank. Randomness in the runner depends on each
range's offset only, so the report equals a single-process run with the same seed (timings
aside). Training wraps the model in ``DistributedDataParallel`` (:mod:`robustness.defenses.trainer`).

:class:`ProcessGroup` is the small view of the default process group that
:func:`robustness.runner.evaluate` and :meth:`robustness.defenses.AdversarialTrainer.fit` use.
:func:`torchrun_session` is what the CLI does under ``torchrun``: initialize the group from the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), pick
``cuda:LOCAL_RANK`` for a CUDA device, and destroy the group at the end.

Backends: ``gloo`` on the CPU; on CUDA ``cpu:gloo,cuda:nccl``: tensors on the GPU (DDP's
gradients) travel through NCCL, and the pickled records and report (object collectives) through
gloo on the CPU, so they take no GPU memory. Collectives wait for the slowest rank, and the
other ranks wait while rank 0 runs the checks: a group initialized here allows
:data:`COLLECTIVE_TIMEOUT`; if you initialize it yourself, pass a ``timeout`` that long.

Example (``torchrun --nproc_per_node=2 script.py``)::

    import torch.distributed as dist, robustness
    dist.init_process_group("gloo")
    report = robustness.evaluate(model, (x, y), attacks=["pgd"], epsilons=[0, 0.1])  # same on every rank
    if dist.get_rank() == 0:
        report.save("out/")
    dist.destroy_process_group()
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor, nn

from robustness.errors import InputError, RobustnessError

__all__ = [
    "COLLECTIVE_TIMEOUT",
    "CollectiveError",
    "ProcessGroup",
    "TorchrunEnv",
    "TrainingReplica",
    "check_sharded",
    "distributed_sampler",
    "local_device",
    "torchrun_env",
    "torchrun_session",
]

log = logging.getLogger(__name__)

#: how long a collective of a group initialized here waits (the slowest rank's batches, then rank 0's checks)
COLLECTIVE_TIMEOUT = timedelta(hours=6)
#: the variables ``torchrun`` sets that :func:`ProcessGroup.current` needs to initialize a group
TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class CollectiveError(RobustnessError):
    """A collective of :class:`ProcessGroup` failed: another rank stopped (its own error says why,
    e.g. an :class:`InputError` on its share of the data) or the network between them failed."""


@contextlib.contextmanager
def _collective(what: str, rank: int) -> Iterator[None]:
    try:
        yield
    except RuntimeError as e:  # gloo: "Connection closed by peer"; NCCL: DistBackendError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise CollectiveError(f"rank {rank} lost the other ranks while {what} ({first}): another rank stopped "
                              "first, and its own error says why") from e


@dataclass(frozen=True)
class TorchrunEnv:
    """What ``torchrun`` told this process: its global rank, its rank on this node, how many processes."""

    rank: int
    local_rank: int
    world_size: int


def torchrun_env() -> TorchrunEnv | None:
    """This process's place in a ``torchrun`` launch, or ``None`` when ``WORLD_SIZE`` is not set."""
    if "WORLD_SIZE" not in os.environ:
        return None
    values = {}
    for name, default in (("RANK", None), ("LOCAL_RANK", "0"), ("WORLD_SIZE", None)):
        text = os.environ.get(name, default)
        try:
            values[name] = int(text) if text is not None else None
        except ValueError:
            raise InputError(f"the environment variable {name}={text!r} is not an integer: launch with torchrun, "
                             "which sets it") from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if rank is None:
        raise InputError("WORLD_SIZE is set but RANK is not: launch with torchrun (or set RANK, LOCAL_RANK, "
                         "WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process)")
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent: launch with torchrun")
    return TorchrunEnv(rank=rank, local_rank=int(values["LOCAL_RANK"] or 0), world_size=world)


def local_device(device: torch.device, env: TorchrunEnv | None = None) -> torch.device:
    """The device this rank should use: ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process).

    A CPU device is returned as it is, an explicit ``cuda:N`` too (e.g. ``cuda:0`` when each process
    sees one GPU through ``CUDA_VISIBLE_DEVICES``), unless several processes of this node
    (``LOCAL_WORLD_SIZE``) would share one of several visible GPUs: that is an :class:`InputError`.
    """
    env = env if env is not None else torchrun_env()
    if device.type != "cuda" or env is None:
        return device
    count = torch.cuda.device_count()
    if device.index is not None:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
        if local_world > 1 and count > 1:
            raise InputError(f"device {device} would put the {local_world} processes of this node on one of its "
                             f"{count} GPUs: use device cuda (--device cuda or auto): each rank takes "
                             "cuda:LOCAL_RANK")
        return device
    if env.local_rank >= count:
        raise InputError(f"LOCAL_RANK={env.local_rank} but this node has {count} GPU(s): launch at most {count} "
                         "processes per node (torchrun --nproc_per_node)")
    return torch.device("cuda", env.local_rank)


def _init_from_env(device: torch.device) -> None:
    import torch.distributed as dist

    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise InputError(
            f"distributed=True needs a torch.distributed process group, but none is initialized and "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: launch with "
            "`torchrun --nproc_per_node=K ...` (or `robustness evaluate --nproc K ...`), or call "
            "torch.distributed.init_process_group yourself"
        )
    env = torchrun_env()
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device, env))
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    log.debug("initialized the %s process group: rank %d of %d", backend, dist.get_rank(), dist.get_world_size())


@dataclass(frozen=True)
class ProcessGroup:
    """The default ``torch.distributed`` process group, as the runner and the trainer use it.

    Attributes:
        rank: this process's rank; world_size: the number of processes; backend: as
            ``torch.distributed.get_backend()`` names it.
        tensor_device: where tensors of the small collectives (:meth:`all_sum`, :meth:`broadcast_buffers`)
            travel: the CPU for gloo, the current CUDA device for an NCCL-only group.
    """

    rank: int
    world_size: int
    backend: str
    tensor_device: torch.device

    @classmethod
    def current(cls, device: str | torch.device | None = None) -> ProcessGroup:
        """The initialized default group, or one initialized now from the ``torchrun`` environment.

        With a CUDA ``device``, the current CUDA device becomes this rank's GPU (``device`` when it has
        an index, else ``cuda:LOCAL_RANK``), which NCCL's object collectives use. Raises
        :class:`InputError` when no group is initialized and the ``torchrun`` variables are missing.
        """
        import torch.distributed as dist

        if not dist.is_available():
            raise InputError("this PyTorch build has no torch.distributed: install one with distributed support")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if not dist.is_initialized():
            _init_from_env(dev)
        elif dev.type == "cuda":
            if dev.index is not None:
                torch.cuda.set_device(dev)
            elif "LOCAL_RANK" in os.environ:
                torch.cuda.set_device(local_device(dev))
        backend = str(dist.get_backend())
        cpu_ok = "gloo" in backend or "mpi" in backend
        tensor_device = torch.device("cpu") if cpu_ok or not torch.cuda.is_available() else \
            torch.device("cuda", torch.cuda.current_device())
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), backend=backend,
                   tensor_device=tensor_device)

    # ------------------------------------------------------------------ evaluation (the runner)

    def owns(self, batch_index: int) -> bool:
        """Whether this rank evaluates loader batch ``batch_index``: round robin, each batch exactly once."""
        return batch_index % self.world_size == self.rank

    def gather_records(self, records: Sequence[Any]) -> list[Any] | None:
        """Every rank's records on rank 0 (in rank order); ``None`` on the other ranks."""
        parts = self.gather(list(records))
        return None if parts is None else [r for part in parts for r in part]

    def share_report(self, report: Any) -> Any:
        """Rank 0's report, returned on every rank (the others pass ``None``)."""
        return self.broadcast(report if self.rank == 0 else None)

    # ------------------------------------------------------------------ generic collectives

    def gather(self, obj: Any) -> list[Any] | None:
        """Each rank's picklable ``obj`` as a list on rank 0 (index = rank); ``None`` elsewhere."""
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        with _collective("gathering results on rank 0", self.rank):
            dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's picklable ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj]
        with _collective("receiving rank 0's results", self.rank):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks, in float64."""
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.tensor_device)
        with _collective("adding up statistics", self.rank):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers of ``module`` (BatchNorm statistics), in place."""
        import torch.distributed as dist

        for buf in module.buffers():
            moved: Tensor = buf if buf.device == self.tensor_device else buf.to(self.tensor_device)
            with _collective("receiving rank 0's buffers", self.rank):
                dist.broadcast(moved, src=0)
            if moved is not buf:
                buf.copy_(moved)


@contextlib.contextmanager
def torchrun_session(device: torch.device) -> Iterator[tuple[torch.device, ProcessGroup | None]]:
    """Under ``torchrun`` with more than one process: this rank's device and the process group.

    Initializes the default group from the environment unless one is initialized already, and
    destroys it on exit if it initialized it. Outside ``torchrun`` (or with one process) it yields
    ``(device, None)`` and does nothing.
    """
    env = torchrun_env()
    if env is None or env.world_size == 1:
        yield device, None
        return
    import torch.distributed as dist

    device = local_device(device, env)
    created = not dist.is_initialized()
    group = ProcessGroup.current(device)
    try:
        yield device, group
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- training (robustness.defenses.trainer)


class TrainingReplica(nn.Module):
    """``model`` under ``DistributedDataParallel``, as the training steps call it.

    Forward passes in training mode (those whose loss is back-propagated into the parameters) go
    through DDP, which gives every rank rank 0's buffers before the pass and averages the
    gradients over the ranks during ``backward()``. Passes in eval mode (the inner attack with
    ``attack_mode="eval"``, the per-epoch sanity forward, ``track_clean``) call the module itself:
    they take gradients with respect to the inputs only (``torch.autograd.grad``), which DDP's
    reducer has no part in. (With ``attack_mode="train"`` the attack's passes go through DDP as
    well: a forward without a parameter backward leaves DDP's reducer idle, and every rank runs
    the same number of passes.) :meth:`release` detaches DDP from the parameters; the caller's
    model object is never replaced.
    """

    def __init__(self, model: nn.Module, dev: torch.device) -> None:
        super().__init__()
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def forward(self, x: Tensor) -> Tensor:
        return self.ddp(x) if self.training else self.ddp.module(x)

    def release(self) -> None:
        """Remove DDP's gradient hooks from the parameters (a later plain ``backward()`` reduces nothing)."""
        remove = getattr(self.ddp, "_remove_autograd_hooks", None)
        if remove is not None:
            remove()


def distributed_sampler(loader: Any) -> Any:
    """The ``DistributedSampler`` a data loader draws its indices from, if any."""
    from torch.utils.data import DistributedSampler

    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        if isinstance(owner, DistributedSampler):
            return owner
    return None


def check_sharded(loader: Any, group: ProcessGroup) -> None:
    """Under DDP every rank trains on its own shard, in the same number of batches: a DistributedSampler."""
    sampler = distributed_sampler(loader)
    fix = ("build it as DataLoader(dataset, batch_size=GLOBAL_BATCH // world_size, "
           "sampler=DistributedSampler(dataset, shuffle=True, seed=SEED)) (the trainer calls set_epoch every epoch)")
    if sampler is None:
        raise InputError(f"distributed training over {group.world_size} processes needs a train_loader that shards "
                         f"the data with a torch.utils.data.DistributedSampler (every rank would otherwise train on "
                         f"all of it, and the ranks could run different numbers of batches and hang): {fix}")
    if sampler.num_replicas != group.world_size or sampler.rank != group.rank:
        raise InputError(f"the train_loader's DistributedSampler is for rank {sampler.rank} of "
                         f"{sampler.num_replicas}, but this process is rank {group.rank} of {group.world_size}: "
                         f"build it after init_process_group (it reads the rank and world size) or pass "
                         f"num_replicas and rank to match")
