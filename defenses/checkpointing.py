"""Resumable training state: what is saved every epoch, written atomically, read back safely.

A *training state* file (``torch.save`` of a dict of tensors and plain Python values only,
so ``torch.load(path, weights_only=True)`` reads it without unpickling objects)::

    {"format": "robustness-training-state", "version": 1,
     "epoch": 3,                      # epochs completed
     "finished": False,               # True once training ended (all epochs, or the guard stopped it)
     "trainer": {...},                # the AdversarialTrainer settings that wrote it
     "optimizer_type": "SGD", "scheduler_type": "OneCycleLR" | None,
     "model": {...}, "optimizer": {...}, "scheduler": {...} | None,
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...] | None,
             "numpy": {...}, "python": {...}, "generators": [ByteTensor, ...]},
     "world_size": 1,                 # processes of the run (DistributedDataParallel); absent: 1
     "rng_ranks": [{...}, ...],       # only when world_size > 1: every rank's "rng", by rank
     "history": {...},                # TrainingHistory.to_dict()
     "guard": {...} | None, "guard_batch": {"x": Tensor, "y": Tensor} | None}

Every write goes through :func:`robustness.io.atomic_open` (temporary file, fsync, rename):
a crash, ``kill -9`` or a full disk leaves the previous state intact, never half a file.

Example::

    save_training_state("run.pt.state", state)
    state = load_training_state("run.pt.state")      # InputError if corrupt or not ours
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustness.errors import InputError
from robustness.io import atomic_open

__all__ = [
    "TRAINING_STATE_FORMAT",
    "TRAINING_STATE_VERSION",
    "capture_rng_state",
    "check_state_dict_matches",
    "history_log_path",
    "load_training_state",
    "restore_rng_state",
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
    """Read a training state written by :func:`save_training_state`, with ``weights_only=True``.

    Raises :class:`InputError` for an empty, truncated, corrupt or foreign file, or one written
    by a newer version; never returns something half-read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"cannot read training checkpoint {path}: {e.strerror or e}") from e
    if size == 0:
        raise _corrupt(path, "the file is empty")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any parse failure: truncated zip, garbage bytes, pickled objects
        text = str(e).strip().splitlines()
        raise _corrupt(path, (text[0] if text else type(e).__name__)[:200]) from e
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
        handle.write(json.dumps(history, indent=2, allow_nan=True) + "\n")
