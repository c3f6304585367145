"""Resumable training state: what is saved every epoch, written atomically, read back safely.

A *training state* file (``torch.save`` of a dict of tensors and plain Python values only,
so ``torch.load(path, weights_only=True)`` reads it without unpickling objects)::

    {"format": "robustness-training-state", "version": 1,
     "epoch": 3,                      # epochs completed
     "finished": False,               # True once training ended (all epochs, or the guard stopped it)
     "trainer": {...},                # the AdversarialTrainer settings that wrote it
     "optimizer_type": "SGD", "scheduler_type": "OneCycleLR" | None,
     "scheduler_interval": "epoch" | "batch",   # when the scheduler stepped; absent (old files): "batch"
     "model": {...}, "optimizer": {...}, "scheduler": {...} | None,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...] | None,
             "numpy": {...}, "python": {...}, "generators": [ByteTensor, ...]},
     "random_modules": [{...}, ...],  # rng_state() of the model's randomized modules (GaussianNoise)
     "world_size": 1,                 # processes of the run (DistributedDataParallel); absent: 1
     "rng_ranks": [{...}, ...],       # only when world_size > 1: every rank's "rng", by rank
     "history": {...},                # TrainingHistory.to_dict()
     "guard": {...} | None, "guard_batch": {"x": Tensor, "y": Tensor} | None}

Every write goes through :func:`robustness.io.atomic_open` (temporary file, fsync, rename):
a crash, ``kill -9`` or a full disk leaves the previous state intact, never half a file.

:func:`save_training_checkpoint` and :func:`restore_training_checkpoint` are what
:class:`robustness.defenses.AdversarialTrainer` calls each epoch and on ``resume=True``: they assemble that
dict from a :class:`~robustness.defenses.fit_run.FitRun` (every rank's random states under
``DistributedDataParallel``), and on resume check that the run matches the one that wrote it before
loading anything into it.

Example::

    save_training_state("run.pt.state", state)
    state = load_training_state("run.pt.state")      # InputError if corrupt or not ours
"""

from __future__ import annotations

import copy
import io
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustness.defenses.fit_run import FitRun
from robustness.defenses.history import TrainingHistory
from robustness.defenses.resume_checks import optimizer_differences, scheduler_differences
from robustness.errors import InputError
from robustness.integrity import read_torch_file
from robustness.io import atomic_open, json_text
from robustness.model import random_modules

__all__ = [
    "TRAINING_STATE_FORMAT",
    "TRAINING_STATE_VERSION",
    "capture_rng_state",
    "check_state_dict_matches",
    "history_log_path",
    "load_training_state",
    "restore_rng_state",
    "restore_training_checkpoint",
    "save_training_checkpoint",
    "save_training_state",
    "to_plain",
    "write_history_log",
]

log = logging.getLogger(__name__)

TRAINING_STATE_FORMAT = "robustness-training-state"
TRAINING_STATE_VERSION = 1


def to_plain(value: Any, where: str = "state") -> Any:
    """``value`` as tensors (on the CPU) and plain Python types, or :class:`InputError` naming what is not.

    Dict keys may be strings or integers (optimizer states use integer keys); tuples stay tuples.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, tuple):
        return tuple(to_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise InputError(f"{where} has a key {k!r} of type {type(k).__name__}: only str and int keys can be saved")
            out[k] = to_plain(v, f"{where}[{k!r}]")
        return out
    raise InputError(
        f"{where} holds a {type(value).__name__}, which a training checkpoint cannot store (only tensors, numbers, "
        "strings, None, lists, tuples and dicts, so that torch.load(weights_only=True) reads it back). "
        "If it comes from a custom scheduler or optimizer, make its state_dict() return plain values"
    )


# ----------------------------------------------------------------------------- random number generators


def capture_rng_state(generators: Sequence[torch.Generator] = (), cuda: bool = False) -> dict[str, Any]:
    """Every random state training draws from: torch (CPU, and CUDA when ``cuda``), NumPy's global
    generator, Python's ``random``, and ``generators`` (the trainer's own, a DataLoader's)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if cuda and torch.cuda.is_available() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": None if gauss_next is None else float(gauss_next)},
        "generators": [g.get_state() for g in generators],
    }


def restore_rng_state(state: Mapping[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Put back what :func:`capture_rng_state` recorded (the same ``generators``, in the same order)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda:
        if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
            raise InputError(
                f"the checkpoint recorded the random state of {len(cuda)} CUDA device(s), but this machine has "
                f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}: resume on the same kind of machine"
            )
        torch.cuda.set_rng_state_all(cuda)
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    saved = state.get("generators") or []
    if len(saved) != len(generators):
        raise InputError(
            f"the checkpoint recorded {len(saved)} random generator(s) (the trainer's and the data loader's) but "
            f"this run has {len(generators)}: resume with a data loader built the same way (generator= or not)"
        )
    for gen, gen_state in zip(generators, saved):
        gen.set_state(gen_state)


# ----------------------------------------------------------------------------- files


def save_training_state(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (the previous file survives any failure).

    Raises :class:`InputError` when the write fails (full disk, permissions), saying that the
    previous checkpoint is intact.
    """
    path = Path(path)
    plain = to_plain({"format": TRAINING_STATE_FORMAT, "version": TRAINING_STATE_VERSION, **state}, "training state")
    buffer = io.BytesIO()
    torch.save(plain, buffer)  # serialize first: torch.save turns a failing write() into an opaque RuntimeError
    try:
        with atomic_open(path, "wb") as handle:
            handle.write(buffer.getbuffer())
    except OSError as e:
        kept = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint exists"
        raise InputError(
            f"could not write the training checkpoint {path}: {e.strerror or e}; {kept}. "
            "Free disk space (or fix permissions) and run again with resume"
        ) from e


def _corrupt(path: Path, why: str) -> InputError:
    return InputError(
        f"training checkpoint {path} is corrupt or truncated ({why}). It was not used: delete it to start "
        "training over (resume=False / no --resume), or put back a good copy"
    )


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training state written by :func:`save_training_state`, with ``weights_only=True``, after
    verifying the CRC-32 of every member of its zip file (:func:`robustness.integrity.read_torch_file`).

    Raises :class:`InputError` for an empty, truncated, corrupt (bytes changed) or foreign file, one
    holding pickled Python objects (never unpickled), or one written by a newer version; never
    returns something half-read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"cannot read training checkpoint {path}: {e.strerror or e}") from e
    if size == 0:
        raise _corrupt(path, "the file is empty")
    obj = read_torch_file(path, what="training checkpoint", corrupt=lambda why: _corrupt(path, why),
                          objects_fix="the trainer writes tensors and plain values only; delete it to start over")
    if not isinstance(obj, dict) or obj.get("format") != TRAINING_STATE_FORMAT:
        raise InputError(
            f"{path} is not a training checkpoint (no format {TRAINING_STATE_FORMAT!r}): it may be a model file "
            "(robustness.loading.save_checkpoint) or another program's; pass the training state file, or start over"
        )
    version = obj.get("version")
    if not isinstance(version, int) or version > TRAINING_STATE_VERSION:
        raise InputError(f"{path} is a training checkpoint of version {version!r}, newer than this package "
                         f"understands ({TRAINING_STATE_VERSION}): upgrade the robustness package")
    missing = [k for k in ("epoch", "finished", "trainer", "model", "optimizer", "rng", "history") if k not in obj]
    if missing:
        raise _corrupt(path, f"missing field(s) {', '.join(missing)}")
    return obj


def check_state_dict_matches(model: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """Raise :class:`InputError` unless ``state`` has exactly ``model``'s keys and shapes (nothing is loaded)."""
    if not isinstance(state, Mapping):
        raise InputError(f"{source} holds no model state_dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and isinstance(state[k], Tensor) and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"wrong shapes {'; '.join(shapes[:5])}{' ...' if len(shapes) > 5 else ''}")
        raise InputError(
            f"{source} was written for a different model architecture ({'; '.join(parts)}): resume with the "
            "architecture (and width, classes, channels) it was trained with, or start over without resume"
        )


def history_log_path(checkpoint: str | Path) -> Path:
    """Where the JSON history log of ``checkpoint`` goes: ``run.pt.state`` -> ``run.pt.history.json``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem if path.suffix else path.name}.history.json")


def write_history_log(path: str | Path, history: Mapping[str, Any]) -> None:
    """Write the history (``TrainingHistory.to_dict()``) as indented JSON, atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(json_text(history, indent=2))


# ----------------------------------------------------------------------------- the trainer's checkpoints


def _checkpoint_of(run: FitRun) -> Path:
    if run.checkpoint is None:
        raise InputError("this training run has no checkpoint file: pass checkpoint=PATH to fit")
    return run.checkpoint


def save_training_checkpoint(run: FitRun, *, epoch: int, finished: bool) -> None:
    """Write the whole state of ``run`` after ``epoch`` (1-based, completed) epochs, then its history log.

    Saves the settings of ``run.trainer``, the model, optimizer and scheduler, the global random
    states and those of ``run.generators`` (the random starts', the loader's), the history and the
    guard; ``finished``: training ended (all epochs, or the guard stopped it). Over ``run.group``
    every rank must call it (their random states are gathered); only rank 0 writes. The state goes
    to ``run.checkpoint`` with :func:`save_training_state`, the history to :func:`history_log_path`
    (both atomically). Raises :class:`InputError` when either cannot be written.
    """
    path, group, model, optimizer, scheduler = _checkpoint_of(run), run.group, run.model, run.optimizer, run.scheduler
    rng = capture_rng_state(run.generators, cuda=run.device.type == "cuda")
    world = 1 if group is None else group.world_size
    rng_ranks = group.gather(rng) if group is not None else None  # every rank's streams, on rank 0
    if group is not None and group.rank != 0:
        return  # rank 0 writes the checkpoint
    state = {
        "epoch": epoch,
        "epochs": run.epochs,
        "finished": finished,
        "trainer": run.trainer.settings(),
        "optimizer_type": type(optimizer).__name__,
        "scheduler_type": type(scheduler).__name__ if scheduler is not None else None,
        "scheduler_interval": run.interval,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng,
        "random_modules": [m.rng_state() for m in random_modules(model)],  # e.g. GaussianNoise's generators
        "world_size": world,
        **({"rng_ranks": rng_ranks} if world > 1 else {}),
        "history": run.history.to_dict(),
        "guard": run.guard.state_dict() if run.guard is not None else None,
        "guard_batch": run.guard_batch,
    }
    save_training_state(path, state)
    log_path = history_log_path(path)
    try:
        write_history_log(log_path, run.history.to_dict())
    except OSError as e:
        raise InputError(f"could not write the training log {log_path}: {e.strerror or e}; the checkpoint "
                         f"{path} was written. Free disk space and resume") from e


def _check_same_schedule(path: Path, state: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                         scheduler: Any) -> None:
    """The optimizer's and scheduler's settings must be those that wrote the checkpoint: loading its
    states would silently replace new ones (another lr, T_max, milestones, a schedule's length)."""
    diffs = optimizer_differences(state["optimizer"], optimizer.state_dict(), scheduled=scheduler is not None)
    diffs += [f"scheduler {d}" for d in scheduler_differences(
        state.get("scheduler"), scheduler.state_dict() if scheduler is not None else None)]
    if not diffs:
        return
    hint = ""
    if any("total_steps" in d for d in diffs):
        epochs = state.get("epochs")
        hint = (f" ({state.get('scheduler_type')}'s total_steps is epochs x batches per epoch: resume with "
                f"epochs={epochs} and the batch size of the first run; CLI: --epochs {epochs} --batch-size as before)")
    shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    raise InputError(f"{path} was written with other optimizer or learning-rate schedule settings ({shown}){hint}. "
                     "A resume continues the saved optimizer and schedule, so it needs the same settings: build "
                     "them as the first run did, or start over without resume")


def restore_training_checkpoint(run: FitRun) -> None:
    """Load the checkpoint ``run.checkpoint`` into ``run``: model, optimizer, scheduler, guard, random states, history.

    Checks before loading anything that the run matches the one that wrote it (process count, the
    settings of ``run.trainer``, optimizer and scheduler types, scheduler interval and schedule
    length, epochs, model architecture), and raises :class:`InputError` saying what differs. Sets
    ``run.done`` (the epochs completed), ``run.history`` (the records so far) and ``run.guard_batch``
    (the guard's fixed batch, ``None`` if none was saved).
    """
    path, group, model, optimizer, scheduler = _checkpoint_of(run), run.group, run.model, run.optimizer, run.scheduler
    settings, epochs, interval = run.trainer.settings(), run.epochs, run.interval
    state = load_training_state(path)
    world = 1 if group is None else group.world_size
    saved_world = state.get("world_size", 1)
    if saved_world != world:
        raise InputError(f"{path} was written by a run of {saved_world} process(es), this one has {world}: the "
                         f"data shards and random streams differ, so resume with {saved_world} process(es) "
                         "(or start over without resume)")
    rng = state["rng"]
    if world > 1:
        ranks = state.get("rng_ranks")
        if not isinstance(ranks, list) or len(ranks) != world:
            raise InputError(f"training checkpoint {path} is corrupt (it lacks the random states of its "
                             f"{world} ranks); delete it to start over")
        rng = ranks[group.rank]  # type: ignore[union-attr]
    saved = state["trainer"] if isinstance(state["trainer"], Mapping) else {}
    diffs = [f"{k}={saved.get(k)!r} there, {v!r} here" for k, v in settings.items() if saved.get(k) != v]
    if diffs:
        raise InputError(f"{path} was written by different trainer settings ({'; '.join(diffs)}): resume with "
                         "the same settings, or start over without resume")
    for what, ckpt_type, ours in (("optimizer", state.get("optimizer_type"), type(optimizer).__name__),
                                  ("scheduler", state.get("scheduler_type"),
                                   type(scheduler).__name__ if scheduler is not None else None)):
        if ckpt_type != ours:
            raise InputError(f"{path} was written with {what} {ckpt_type}, but this run uses {ours}: resume with "
                             f"the same {what}")
    # A checkpoint without the entry was written when fit stepped schedulers per batch by default (the
    # default is now per epoch): compare it as "batch". Without a scheduler the interval changes nothing.
    saved_interval = state.get("scheduler_interval", "batch")
    if scheduler is not None and saved_interval != interval:
        raise InputError(f"{path} stepped its scheduler per {saved_interval}, this run per {interval}: resume "
                         f"with scheduler_interval={saved_interval!r} (fit's default is 'epoch'), or start over "
                         "without resume")
    done = int(state["epoch"])
    if done > epochs:
        raise InputError(f"{path} has already completed {done} epochs, more than epochs={epochs}")
    check_state_dict_matches(model, state["model"], f"training checkpoint {path}")
    saved_random = state.get("random_modules") or []
    if len(saved_random) != len(random_modules(model)):
        raise InputError(f"{path} recorded the random state of {len(saved_random)} randomized module(s) (e.g. "
                         f"GaussianNoise), this model has {len(random_modules(model))}: resume with the model "
                         "that wrote it")
    _check_same_schedule(path, state, optimizer, scheduler)
    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        model.load_state_dict(saved_model)  # a refused resume leaves the run's objects as they were
        optimizer.load_state_dict(saved_optimizer)
        detail = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise InputError(f"{path} does not fit this model/optimizer/scheduler ({detail}): resume with the ones "
                         "it was written with, or start over without resume") from e
    if run.guard is not None and state.get("guard"):
        run.guard.load_state_dict(state["guard"])
    try:
        history = TrainingHistory.from_dict(state["history"])
    except (KeyError, TypeError) as e:
        raise InputError(f"training checkpoint {path} is corrupt (history unreadable: {e}); delete it to "
                         "start over") from e
    restore_rng_state(rng, run.generators)
    for module, module_state in zip(random_modules(model), state.get("random_modules") or []):
        module.set_rng_state(module_state)
    run.done, run.history, run.guard_batch = done, history, state.get("guard_batch")
