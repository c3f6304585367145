"""Resumable evaluations: a directory that records every finished range of examples.

``evaluate(..., state="run-state/")`` (CLI: ``--state DIR``) writes one file per finished range
of examples, atomically; an evaluation killed at any moment (even ``kill -9``) and run again with
the same ``state`` (same model, data and settings) skips the finished ranges and ends with the same
report. Randomness depends on a range's offset only (:func:`robustness.seeding.derive_seed`), so the
ranges evaluated after a resume draw the same numbers as in an uninterrupted run.

Layout of a state directory::

    run-state/
        robustness.lock            held by the evaluation running here: {"pid", "host", "since", "command"}
        meta.json                  {"format": 2, "robustness": "0.1.0", "torch": "2.14.1",
                                    "fingerprint": {"model": "<sha-256>", "attacks": {...}, "epsilons": [...],
                                                    "norm": ..., "bounds": ..., "seed": ..., "batch_size": ...,
                                                    "schedule": ..., "gradient_mode": ..., "amp": ...}}
        range-000000000000.pt      the BatchRecord of examples 0..15  (torch.save of tensors, numbers,
        range-000000000016.pt      the BatchRecord of examples 16..31  strings, lists and dicts:
        ...                                                             read with weights_only=True),
                                   each with the SHA-256 of the fingerprint it was computed for

* One evaluation at a time: :meth:`EvaluationState.open` locks ``robustness.lock`` for the run
  (:mod:`robustness.locking`: ``flock``, released by the operating system when the run dies, even
  by ``kill -9``) and a second evaluation on the same directory is an :class:`~robustness.errors.InputError`
  at once, naming the holder (pid, host, start time, command); :meth:`EvaluationState.close` releases
  it. The ranks of a distributed evaluation share rank 0's lock (``lock=False`` on the others).
* ``meta.json`` is written first, when the directory is created; opening an existing directory
  compares its fingerprint with the evaluation's, and any difference (other weights, attacks,
  budgets, seed, batch size, ...) is an :class:`~robustness.errors.InputError` that names it:
  never a silent fresh start. :func:`model_fingerprint` covers the model's class name and its
  parameters and buffers, not its ``forward`` code. The data are checked by the runner: a finished
  range whose labels differ from the data's is an error too.
* Each ``range-<offset>.pt`` is written to a temporary file beside it, flushed, fsynced and
  renamed (:func:`robustness.io.atomic_open`): a kill leaves either the whole file or none.
  Leftover temporary files (``.range-....tmp``) are ignored, and removed once they are a minute
  old (a younger one may belong to a rank of a distributed run that is writing it now).
* A corrupt or truncated record file is an error that names it: delete that file to evaluate its
  examples again. So is a record file stamped with another fingerprint than meta.json's (a file
  copied in from another evaluation): an error rather than a re-evaluation, because it means
  something other than this evaluation wrote here, and nothing in the directory is overwritten
  until you have looked. Directories of format 1 (record files without the stamp, written before
  the lock existed, so possibly mixed by two concurrent runs) are refused with the format error.

Example::

    report = robustness.evaluate(model, data, attacks=["pgd"], epsilons=[0, 0.1], state="run-state/")
    # killed here? The same call again resumes and returns the same report.

    with EvaluationState.open("run-state/", fingerprint) as store:   # locked until the block ends
        store.save(record)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustness.errors import InputError, RobustnessWarning
from robustness.integrity import hash_tensor, read_torch_file
from robustness.io import atomic_open, atomic_write_text
from robustness.locking import FileLock, acquire
from robustness.records import BatchRecord

__all__ = ["EvaluationState", "LOCK", "STATE_FORMAT", "fingerprint_sha256", "model_fingerprint"]

log = logging.getLogger(__name__)

#: version of the directory layout and record format; another one is an error on open
#: (2: each record file carries its fingerprint's SHA-256, and the directory is locked while in use)
STATE_FORMAT = 2
META = "meta.json"
LOCK = "robustness.lock"
#: the key of a record file that holds the SHA-256 of the fingerprint it was computed for
STAMP = "fingerprint_sha256"
_RECORD = re.compile(r"range-(\d+)\.pt")
_TEMPORARY = re.compile(r"\.(meta\.json|range-\d+\.pt)\..+\.tmp")  # robustness.io.atomic_open's names
#: a temporary file untouched for this long is a leftover of a killed run, not a write in progress
STALE_SECONDS = 60.0

_MISSING = object()  # a fingerprint key that one side lacks

#: how an error names a fingerprint key that differs
_WHAT = {
    "model": "another model (weights differ)",
    "attacks": "other attacks",
    "epsilons": "other budgets",
    "seed": "another seed",
    "batch_size": "another batch size",
    "norm": "another norm",
    "bounds": "other bounds",
    "schedule": "another schedule",
    "gradient_mode": "another gradient mode",
}


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of ``model``'s class name and every parameter and buffer (name, shape, dtype, bytes).

    The same weights give the same string on any device; one changed weight gives another. Tensors
    are copied to the CPU one at a time where needed; the model itself (device, mode, values) is
    untouched. The ``forward`` code is not covered.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    # "1": the fingerprint's own version (kept when the directory layout, STATE_FORMAT, changes)
    digest = hashlib.sha256(f"robustness-model-fingerprint 1 {type(model).__qualname__}\n".encode())
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            hash_tensor(digest, [kind], name, tensor)
    return digest.hexdigest()


class EvaluationState:
    """The finished ranges of one evaluation, in a directory (see the module docstring).

    Open it with :meth:`open` (which locks the directory) and close it with :meth:`close`, or use
    it as a context manager; :attr:`finished` maps offsets to the records saved so far, and
    :meth:`save` adds one, atomically, stamped with the fingerprint.
    """

    def __init__(self, path: Path, fingerprint: dict[str, Any], records: dict[int, BatchRecord],
                 lock: FileLock | None = None) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.stamp = fingerprint_sha256(fingerprint)
        self._records = records
        self._lock = lock

    @classmethod
    def open(cls, path: str | Path, fingerprint: Mapping[str, Any], *, lock: bool = True) -> EvaluationState:
        """Create the state directory ``path`` for an evaluation with ``fingerprint``, or open it, and lock it.

        ``fingerprint``: plain JSON values (the runner passes :meth:`robustness.EvalConfig.fingerprint` and
        :func:`model_fingerprint`). An existing directory must hold a ``meta.json`` with the same
        fingerprint (else :class:`InputError`, naming what differs), or be empty. An evaluation
        running in it already is an :class:`InputError` naming it; ``lock=False`` skips the lock
        (for the ranks of a distributed evaluation whose rank 0 holds it).
        """
        path = Path(path)
        wanted = _as_json(dict(fingerprint))
        if path.exists() and not path.is_dir():
            raise InputError(f"the evaluation state {path} is a file, not a directory: pass a directory "
                             f"(it is created if missing)")
        path.mkdir(parents=True, exist_ok=True)
        _listing(path)  # a foreign directory is refused before the lock file is created in it
        held = acquire(path / LOCK, what=f"the evaluation state {path}",
                       fix="wait for that evaluation to finish, or use another state directory (--state)") \
            if lock else None
        try:
            return cls._open_locked(path, wanted, held)
        except BaseException:
            if held is not None:
                held.release()
            raise

    @classmethod
    def _open_locked(cls, path: Path, wanted: dict[str, Any], lock: FileLock | None) -> EvaluationState:
        _remove_stale(path)
        meta_path = path / META
        # after the lock, one listing decides (the ranks of a distributed run open after rank 0 wrote meta.json)
        if META in _listing(path):
            _check_meta(path, _read_meta(meta_path), wanted)
            records = _load_records(path, wanted)
            log.info("resuming the evaluation in %s: %d finished ranges (%d examples)", path, len(records),
                     sum(r.n for r in records.values()))
            return cls(path, wanted, records, lock)
        meta = {"format": STATE_FORMAT, **_versions(), "fingerprint": wanted}
        atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return cls(path, wanted, {}, lock)

    @property
    def finished(self) -> Mapping[int, BatchRecord]:
        """The records saved so far (before this run and since), keyed by offset; read-only."""
        return MappingProxyType(self._records)

    def save(self, record: BatchRecord) -> None:
        """Write ``record`` to ``range-<offset>.pt`` atomically (replacing one of the same offset)."""
        state = _plain({f.name: getattr(record, f.name) for f in dataclasses.fields(record)}, "record")
        state[STAMP] = self.stamp
        with atomic_open(self.path / _record_name(record.offset), "wb") as handle:
            torch.save(state, handle)
        self._records[record.offset] = record

    def close(self) -> None:
        """Release the directory's lock (the records stay); a second call does nothing."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> EvaluationState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EvaluationState({str(self.path)!r}, {len(self._records)} finished ranges)"


def fingerprint_sha256(fingerprint: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``fingerprint`` as canonical JSON: the stamp of each record file."""
    return hashlib.sha256(json.dumps(_as_json(dict(fingerprint)), sort_keys=True).encode()).hexdigest()


def _listing(path: Path) -> list[str]:
    """The names in ``path`` besides the lock and temporary files; files without ``meta.json`` are an error."""
    names = sorted(p.name for p in path.iterdir() if p.name != LOCK and not _TEMPORARY.fullmatch(p.name))
    if names and META not in names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise InputError(
            f"{path} holds files ({shown}) but no {META}: it is not an evaluation state and nothing in it "
            f"is overwritten; pass a new or empty directory as the state"
        )
    return names


def _record_name(offset: int) -> str:
    return f"range-{offset:012d}.pt"


def _versions() -> dict[str, str]:
    import robustness

    return {"robustness": robustness.__version__, "torch": torch.__version__.split("+")[0]}


def _as_json(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from JSON (tuples become lists), so that it compares with meta.json."""
    try:
        out: dict[str, Any] = json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as err:
        raise InputError(f"the evaluation state's fingerprint must hold plain JSON values: {err}") from None
    return out


def _remove_stale(path: Path) -> None:
    """Remove the temporary files a killed run left behind (those untouched for STALE_SECONDS)."""
    now = time.time()
    for p in path.iterdir():
        if _TEMPORARY.fullmatch(p.name):
            try:
                if now - p.stat().st_mtime > STALE_SECONDS:
                    p.unlink()
                    log.info("removed %s, left behind by an interrupted write", p)
            except OSError:  # removed meanwhile by another rank
                pass


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        meta, why = None, f"{type(err).__name__}: {err}"
    else:
        why = "no 'format' and 'fingerprint'"
    if not isinstance(meta, dict) or not isinstance(meta.get("fingerprint"), dict) or "format" not in meta:
        raise InputError(
            f"the evaluation state file {meta_path} is corrupt ({why}): the finished ranges beside it cannot "
            f"be trusted without it; delete {meta_path.parent} to start over, or use a new state directory"
        )
    return meta


def _check_meta(path: Path, meta: dict[str, Any], wanted: dict[str, Any]) -> None:
    if meta["format"] != STATE_FORMAT:
        raise InputError(
            f"the evaluation state in {path} has format {meta['format']!r} (robustness "
            f"{meta.get('robustness', '?')}); this version reads format {STATE_FORMAT}: delete {path} to start over, "
            f"or use a new state directory"
        )
    stored = meta["fingerprint"]
    keys = [k for k in _WHAT if k in stored or k in wanted] + sorted((set(stored) | set(wanted)) - set(_WHAT))
    differ = [k for k in keys if stored.get(k, _MISSING) != wanted.get(k, _MISSING)]
    if differ:
        what = "; ".join(_difference(k, stored.get(k, _MISSING), wanted.get(k, _MISSING)) for k in differ)
        raise InputError(
            f"the evaluation state in {path} was written for {what}: use a new state directory (--state), "
            f"or delete {path} to start over"
        )
    now = _versions()
    old = {k: meta.get(k) for k in now}
    if old != now:
        msg = (f"the evaluation state in {path} was written by robustness {old['robustness']} with torch "
               f"{old['torch']}; this is robustness {now['robustness']} with torch {now['torch']}: the finished "
               f"ranges are reused, but their numbers may differ from what this version computes; delete "
               f"{path} to evaluate everything again")
        warnings.warn(msg, RobustnessWarning, stacklevel=4)



def _difference(key: str, then: Any, now: Any) -> str:
    what = _WHAT.get(key, f"another {key}")
    if then is _MISSING or now is _MISSING:
        return f"{what} ('{key}' {'missing then' if then is _MISSING else 'not set now'})"
    if key == "model":
        return f"{what}: fingerprint {str(then)[:12]}... then, {str(now)[:12]}... now"
    if key == "attacks" and isinstance(then, dict) and isinstance(now, dict):
        if list(then) != list(now):
            return f"{what} ({', '.join(then)} then, {', '.join(now)} now)"
        return f"{what} ({'; '.join(f'{k}: {then[k]} then, {now[k]} now' for k in then if then[k] != now[k])})"
    return f"{what} ({json.dumps(then)} then, {json.dumps(now)} now)"


def _load_records(path: Path, fingerprint: dict[str, Any]) -> dict[int, BatchRecord]:
    records = {}
    for p in sorted(path.iterdir()):
        match = _RECORD.fullmatch(p.name)
        if match:
            record = _load_record(p, fingerprint)
            if record.offset != int(match.group(1)):
                raise _corrupt(p, f"it holds the examples from {record.offset}, not {int(match.group(1))}")
            records[record.offset] = record
    return records


def _load_record(p: Path, fingerprint: dict[str, Any]) -> BatchRecord:
    state = read_torch_file(p, what="evaluation state file", corrupt=lambda why: _corrupt(p, why),
                            objects_fix=f"delete it (the harness writes tensors only), or delete {p.parent}")
    names = {f.name for f in dataclasses.fields(BatchRecord)}
    if not isinstance(state, dict) or set(state) != names | {STAMP}:
        raise _corrupt(p, "not a batch record of this version")
    stamp, wanted = state.pop(STAMP), fingerprint_sha256(fingerprint)
    if stamp != wanted:
        raise InputError(
            f"the evaluation state file {p} was computed for another evaluation (fingerprint SHA-256 "
            f"{str(stamp)[:12]}...) than the one {META} records ({wanted[:12]}...): delete that file to evaluate "
            f"its examples again, or delete {p.parent} to start over"
        )
    attacks = fingerprint.get("attacks")
    if (not isinstance(state["labels"], Tensor) or state["labels"].dim() != 1 or not isinstance(state["offset"], int)
            or (isinstance(attacks, dict) and set(state["broken"]) != set(attacks))):
        raise _corrupt(p, "its contents do not match this evaluation")
    return BatchRecord.from_state(state)


def _corrupt(p: Path, why: str) -> InputError:
    return InputError(f"the evaluation state file {p} is unreadable ({why}): delete that file to evaluate its "
                      f"examples again, or delete {p.parent} to start over")


def _plain(value: Any, where: str) -> Any:
    """``value`` as what ``torch.load(weights_only=True)`` reads: tensors (each with storage of its own, on
    the CPU: a view would save its whole base tensor), numbers, strings, None, lists, tuples and dicts."""
    if isinstance(value, Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where} is a {type(value).__name__}, which an evaluation state cannot store: "
                    f"records hold tensors, numbers, strings, lists and dicts")
