"""Resumable evaluations (robustness/state.py): reuse of finished ranges, the lock, and a clear error for
every mismatch or damaged file. The real processes killed, interrupted or racing on one directory are in
tests/hostile/test_evaluate_interrupts.py.

"The same report" here means ``Report.to_dict()`` without ``timings`` (wall-clock seconds: they differ
from run to run), plus ``per_sample`` and the pixels of the example images. ``model_calls`` is part of it:
the finished ranges' records carry their model calls, so a resumed report counts the same calls as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import socket
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import robustness
from robustness import locking
from robustness.attacks import FGSM
from robustness.errors import InputError, RobustnessWarning
from robustness.records import BatchRecord
from robustness.report import Report
from robustness.state import LOCK, META, STALE_SECONDS, EvaluationState, model_fingerprint
from tests.counting import Counting
from tests.damage import KINDS, damage_file

SETTINGS: dict[str, Any] = dict(attacks=["fgsm", "pgd"], epsilons=[0, 0.05, 0.1], batch_size=16, progress=False)


def _comparable(report: Report) -> str:
    d = report.to_dict()
    del d["timings"]
    return json.dumps(d, sort_keys=True, default=str)  # NaN (no perturbation) compares as text


def _assert_same_report(a: Report, b: Report) -> None:
    assert _comparable(a) == _comparable(b)
    assert json.dumps(a.per_sample, default=str) == json.dumps(b.per_sample, default=str)
    assert len(a.examples) == len(b.examples)
    for ea, eb in zip(a.examples, b.examples):
        assert torch.equal(ea["clean"], eb["clean"]) and torch.equal(ea["adversarial"], eb["adversarial"])


def _same(a: Any, b: Any) -> bool:
    """Deep equality of record contents: tensors by dtype, shape and values (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape):
            return False
        return bool(torch.where(a.isnan(), b.isnan(), a == b).all()) if a.is_floating_point() else torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _files(state: Path) -> dict[str, tuple[int, int]]:
    """Record files by name, with (inode, mtime): a rewrite replaces the inode (atomic rename)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(state.glob("range-*.pt"))}


# ----------------------------------------------------------------------------------------------------------------
# resuming in-process


def test_resume_evaluates_only_the_missing_ranges_and_gives_the_same_report(trained_model, test_batch,
                                                                            tmp_path) -> None:
    x, y = test_batch[0][:64], test_batch[1][:64]
    state = tmp_path / "state"
    full_model = Counting(trained_model)
    full = robustness.evaluate(full_model, (x, y), **SETTINGS, state=state)
    assert sorted(_files(state)) == [f"range-{o:012d}.pt" for o in (0, 16, 32, 48)]
    with EvaluationState.open(state, json.loads((state / META).read_text())["fingerprint"]) as store:
        kept = dict(store.finished)
    for offset in (16, 48):  # as if killed: two ranges missing
        (state / f"range-{offset:012d}.pt").unlink()
    before = _files(state)

    model = Counting(copy.deepcopy(trained_model))
    resumed = robustness.evaluate(model, (x, y), **SETTINGS, state=state)
    _assert_same_report(full, resumed)
    assert resumed.checks and [c.to_dict() for c in resumed.checks] == [c.to_dict() for c in full.checks]
    # the model saw the missing ranges only: everything the full run spent, less the kept ranges' clean
    # pass and attacks (the sanity checks run again on both)
    spent = {o: r.n + sum(c["samples"] for c in r.calls.values()) for o, r in kept.items()}
    assert model.samples == full_model.samples - spent[0] - spent[32]
    after = _files(state)
    assert len(after) == 4 and all(after[name] == before[name] for name in before)

    again = Counting(copy.deepcopy(trained_model))  # everything finished: only the checks run
    _assert_same_report(full, robustness.evaluate(again, (x, y), **SETTINGS, state=state))
    assert again.samples == full_model.samples - sum(spent.values())
    assert _files(state) == after


def test_saved_records_read_back_identical_and_compact(trained_model, test_batch, tmp_path, monkeypatch) -> None:
    saved: list[BatchRecord] = []
    real_save = EvaluationState.save

    def spy(self: EvaluationState, record: BatchRecord) -> None:
        saved.append(record)
        real_save(self, record)

    monkeypatch.setattr(EvaluationState, "save", spy)
    x, y = test_batch[0][:32], test_batch[1][:32]
    robustness.evaluate(trained_model, (x, y), **SETTINGS, checks=False, state=tmp_path / "s")
    assert len(saved) == 2 and saved[0].examples and saved[0].subset is not None
    fingerprint = json.loads((tmp_path / "s" / META).read_text())["fingerprint"]
    store = EvaluationState.open(tmp_path / "s", fingerprint, lock=False)
    for record in saved:
        loaded = store.finished[record.offset]
        assert all(_same(getattr(record, f.name), getattr(loaded, f.name)) for f in fields(BatchRecord))
        # the records module's own contract: to_state() passes torch.save / torch.load(weights_only=True)
        buffer = io.BytesIO()
        torch.save(record.to_state(), buffer)
        buffer.seek(0)
        assert _same(BatchRecord.from_state(torch.load(buffer, weights_only=True)).to_state(), record.to_state())

    # a record whose tensors are views of a large tensor stores the views only, not their base
    big = copy.copy(saved[1])
    big.labels = torch.cat([saved[1].labels, torch.zeros(1_000_000, dtype=torch.long)])[:saved[1].n]
    size = (tmp_path / "s" / "range-000000000016.pt").stat().st_size
    store.save(big)  # the same offset again: overwritten
    assert (tmp_path / "s" / "range-000000000016.pt").stat().st_size < size + 1000
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [META, "range-000000000000.pt",
                                                                  "range-000000000016.pt", LOCK]


# ----------------------------------------------------------------------------------------------------------------
# mismatches and damaged files: clear errors, nothing overwritten


@pytest.fixture()
def small_state(trained_model, test_batch, tmp_path) -> tuple[Path, dict[str, Any]]:
    """A finished state of 32 examples (2 ranges), and the arguments that wrote it."""
    kwargs = dict(model=trained_model, data=(test_batch[0][:32], test_batch[1][:32]), attacks=["fgsm"],
                  epsilons=[0, 0.1], batch_size=16, checks=False, progress=False, state=tmp_path / "state")
    robustness.evaluate(**kwargs)
    return tmp_path / "state", kwargs


def _contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _bumped(model: nn.Module) -> nn.Module:
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.bias[3] += 1e-6
    return other


@pytest.mark.parametrize("change, message", [
    (lambda kw: {"model": _bumped(kw["model"])}, r"another model \(weights differ\)"),
    (lambda kw: {"attacks": ["fgsm", "pgd"]}, r"other attacks \(fgsm then, fgsm, pgd now\)"),
    (lambda kw: {"attacks": [FGSM(loss="margin")]}, r"other attacks \(fgsm: FGSM\(.*loss='ce'.*\) then, "
                                                    r"FGSM\(.*loss='margin'.*\) now\)"),
    (lambda kw: {"epsilons": [0, 0.2]}, r"other budgets \(\[0.0, 0.1\] then, \[0.0, 0.2\] now\)"),
    (lambda kw: {"seed": 1}, r"another seed \(0 then, 1 now\)"),
    (lambda kw: {"batch_size": 8}, r"another batch size \(16 then, 8 now\)"),
    (lambda kw: {"norm": "l2"}, r"another norm"),
    (lambda kw: {"schedule": "bisect"}, r"another schedule"),
    (lambda kw: {"gradient_mode": None}, r"another gradient mode"),
], ids=["weights", "attacks", "attack-settings", "budgets", "seed", "batch-size", "norm", "schedule", "gradient-mode"])
def test_other_settings_are_an_error_naming_what_differs(small_state, change, message) -> None:
    state, kwargs = small_state
    before = _contents(state)
    with pytest.raises(InputError, match=message) as info:
        robustness.evaluate(**{**kwargs, **change(kwargs)})
    message = str(info.value)
    assert f"the evaluation state in {state} was written for" in message and f"delete {state}" in message
    assert _contents(state) == before


def test_several_differences_are_named_together(small_state) -> None:
    state, kwargs = small_state
    with pytest.raises(InputError, match=r"other budgets .*; another seed"):
        robustness.evaluate(**{**kwargs, "epsilons": [0, 0.3], "seed": 5})


def test_other_data_is_the_runners_error(small_state) -> None:
    state, kwargs = small_state
    x, y = kwargs["data"]
    before = _contents(state)
    with pytest.raises(InputError, match="does not match the data: examples 0..15 have other inputs or labels"):
        robustness.evaluate(**{**kwargs, "data": (x, y.roll(1))})
    assert _contents(state) == before


OTHER_RUN = {"other-attacks": {"attacks": ["pgd"]}, "other-seed": {"seed": 1}}  # same shape: only the stamp differs


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "other-offset", *OTHER_RUN])
def test_a_damaged_record_file_is_an_error_naming_it(small_state, damage, tmp_path) -> None:
    state, kwargs = small_state
    reference = robustness.evaluate(**{**kwargs, "state": None})
    path = state / "range-000000000016.pt"
    if damage in KINDS:
        damage_file(path, damage)
    elif damage == "other-offset":
        path.write_bytes((state / "range-000000000000.pt").read_bytes())
    else:  # a record of another evaluation, copied in (what two runs racing on one directory left before the lock)
        robustness.evaluate(**{**kwargs, **OTHER_RUN[damage], "state": tmp_path / "other"})
        path.write_bytes((tmp_path / "other" / path.name).read_bytes())
    expected = "was computed for another evaluation" if damage in OTHER_RUN else "unreadable"
    with pytest.raises(InputError, match=expected) as info:
        robustness.evaluate(**kwargs)
    assert str(path) in str(info.value) and "delete that file" in str(info.value) and "\n" not in str(info.value)
    path.unlink()  # as the message says: that range is evaluated again
    _assert_same_report(reference, robustness.evaluate(**kwargs))


@pytest.mark.parametrize("text", ["", '{"format": 1, "fingerp', "[]", '{"format": 1}', "\udcff"])
def test_a_damaged_meta_json_is_an_error_naming_it(small_state, text) -> None:
    state, kwargs = small_state
    (state / META).write_text(text, encoding="utf-8", errors="surrogateescape")
    before = _contents(state)
    with pytest.raises(InputError, match="is corrupt") as info:
        robustness.evaluate(**kwargs)
    assert str(state / META) in str(info.value) and f"delete {state}" in str(info.value)
    assert _contents(state) == before


def test_another_format_is_an_error_and_another_version_a_warning(small_state) -> None:
    state, kwargs = small_state
    meta = json.loads((state / META).read_text())
    (state / META).write_text(json.dumps({**meta, "robustness": "0.0.1"}))
    with pytest.warns(RobustnessWarning, match="written by robustness 0.0.1"):
        robustness.evaluate(**kwargs)
    for old in (99, 1):  # 1: record files without the fingerprint stamp, written before the lock existed
        (state / META).write_text(json.dumps({**meta, "format": old}))
        with pytest.raises(InputError, match=f"has format {old} .*this version reads format 2: delete"):
            robustness.evaluate(**kwargs)


def test_a_state_in_use_is_refused_at_once_naming_the_holder(small_state) -> None:
    state, kwargs = small_state
    fingerprint = json.loads((state / META).read_text())["fingerprint"]
    before = _contents(state)
    with EvaluationState.open(state, fingerprint):  # another evaluation is running here
        holder = json.loads((state / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(InputError) as info:
            robustness.evaluate(**kwargs)
        assert _contents(state) == {**before, LOCK: (state / LOCK).read_bytes()}  # nothing written, lock kept
    message = str(info.value)
    assert message.startswith(f"the evaluation state {state} is in use by pid {os.getpid()} on "
                              f"{socket.gethostname()} since {holder['since']} ({holder['command']}): wait ")
    assert "another state directory (--state)" in message and "\n" not in message
    assert (state / LOCK).read_text() == ""  # released and emptied
    robustness.evaluate(**kwargs)  # free again: it resumes


def test_a_holder_that_wrote_nothing_is_still_refused(tmp_path, monkeypatch) -> None:
    fcntl = pytest.importorskip("fcntl")  # POSIX
    monkeypatch.setattr(locking, "READ_HOLDER_SECONDS", 0.05)
    (tmp_path / "s").mkdir()
    with open(tmp_path / "s" / LOCK, "w") as handle:  # locked by a process that is not the harness
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(InputError, match=r"is in use by another process \(it has not written itself into"):
            EvaluationState.open(tmp_path / "s", {"model": "abc"})
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [LOCK]
    with EvaluationState.open(tmp_path / "s", {"model": "abc"}):
        assert json.loads((tmp_path / "s" / LOCK).read_text())["pid"] == os.getpid()


def test_a_foreign_directory_or_a_file_is_never_used(trained_model, test_batch, tmp_path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    kwargs = dict(attacks=["fgsm"], epsilons=[0, 0.1], batch_size=16, checks=False, progress=False)
    with pytest.raises(InputError, match=r"holds files \(notes.txt\) but no meta.json"):
        robustness.evaluate(trained_model, test_batch, **kwargs, state=foreign)
    assert _contents(foreign) == {"notes.txt": b"keep me"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, not a directory"):
        robustness.evaluate(trained_model, test_batch, **kwargs, state=tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    robustness.evaluate(trained_model, (test_batch[0][:16], test_batch[1][:16]), **kwargs, state=empty / "a" / "b")
    assert sorted(p.name for p in (empty / "a" / "b").iterdir()) == [META, "range-000000000000.pt", LOCK]


def test_leftover_temporary_files_are_ignored_and_stale_ones_removed(tmp_path) -> None:
    fingerprint = {"model": "abc", "seed": 0}
    state = tmp_path / "s"
    state.mkdir()
    half_meta = state / ".meta.json.k1ll3d.tmp"  # killed while writing meta.json: still a new state
    half_meta.write_text('{"form')
    old = time.time() - 2 * STALE_SECONDS
    os.utime(half_meta, (old, old))
    fresh = state / ".range-000000000016.pt.x7y8z9.tmp"  # maybe being written by another rank right now
    fresh.write_bytes(b"\x00partial")
    with EvaluationState.open(state, fingerprint) as store:
        assert dict(store.finished) == {} and not half_meta.exists() and fresh.exists()
    os.utime(fresh, (old, old))
    with EvaluationState.open(state, fingerprint) as store:
        assert dict(store.finished) == {} and not fresh.exists()
    assert sorted(p.name for p in state.iterdir()) == [META, LOCK]


# ----------------------------------------------------------------------------------------------------------------
# model_fingerprint


def test_fingerprint_is_stable_and_changes_with_every_single_weight(trained_model) -> None:
    fp = model_fingerprint(trained_model)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert model_fingerprint(trained_model) == fp == model_fingerprint(copy.deepcopy(trained_model))
    tensors = dict(trained_model.named_parameters()) | dict(trained_model.named_buffers())
    assert "features.1.running_mean" in tensors and "features.1.num_batches_tracked" in tensors
    for name, t in tensors.items():
        flat = t.data.view(-1)
        last = flat[-1].clone()
        flat[-1] += 1 if not t.is_floating_point() else max(abs(float(last)) * 1e-6, 1e-12)
        assert model_fingerprint(trained_model) != fp, name
        flat[-1] = last
        assert model_fingerprint(trained_model) == fp


def test_fingerprint_covers_dtype_names_and_class(trained_model) -> None:
    fp = model_fingerprint(trained_model)
    assert model_fingerprint(copy.deepcopy(trained_model).double()) != fp

    class Renamed(type(trained_model)):  # type: ignore[misc]
        pass

    other = Renamed()
    other.load_state_dict(trained_model.state_dict())
    assert model_fingerprint(other) != fp
    wrapped = nn.Sequential(trained_model)  # same tensors under other names
    assert model_fingerprint(wrapped) != model_fingerprint(nn.Sequential(nn.Identity(), trained_model))
    with pytest.raises(InputError, match="not initialized yet"):
        model_fingerprint(nn.LazyLinear(3))
    with pytest.raises(InputError, match="meta device"):
        model_fingerprint(nn.Linear(2, 2, device="meta"))


def test_fingerprint_leaves_the_model_alone(trained_model) -> None:
    trained_model.train()
    trained_model.features[0].eval()
    modes = [m.training for m in trained_model.modules()]
    state = {k: v.clone() for k, v in trained_model.state_dict().items()}
    model_fingerprint(trained_model)
    assert [m.training for m in trained_model.modules()] == modes
    assert all(torch.equal(v, state[k]) for k, v in trained_model.state_dict().items())
    assert all(p.requires_grad and p.grad is None for p in trained_model.parameters())


def test_fingerprint_streams_large_models_fast() -> None:
    model = nn.Linear(2048, 2048)  # 4 M parameters, 16 MB: a per-element Python loop would take minutes
    start = time.perf_counter()
    model_fingerprint(model)
    assert time.perf_counter() - start < 5


@pytest.mark.gpu
def test_fingerprint_is_the_same_on_the_gpu_and_the_model_stays_there(trained_model) -> None:
    fp = model_fingerprint(trained_model)
    trained_model.cuda()
    assert model_fingerprint(trained_model) == fp
    assert all(p.is_cuda for p in trained_model.parameters())


def test_state_for_more_examples_than_the_data_is_an_error(trained_model, test_batch, tmp_path) -> None:
    x, y = test_batch
    kw = dict(attacks=["fgsm"], epsilons=[0.1], progress=False, checks=False, batch_size=16, state=tmp_path / "s")
    robustness.evaluate(trained_model, (x[:32], y[:32]), **kw)
    with pytest.raises(InputError, match="holds examples from 16 on, but the data has only 16"):
        robustness.evaluate(trained_model, (x[:16], y[:16]), **kw)


def test_changed_inputs_with_the_same_labels_are_detected(trained_model, test_batch, tmp_path) -> None:
    x, y = test_batch
    kw = dict(attacks=["fgsm"], epsilons=[0.1], progress=False, checks=False, batch_size=16, state=tmp_path / "s")
    robustness.evaluate(trained_model, (x[:32], y[:32]), **kw)
    changed = x[:32].clone()
    changed[20, 0, 3, 3] = 1.0 - changed[20, 0, 3, 3]
    with pytest.raises(InputError, match="examples 16..31 have other inputs or labels"):
        robustness.evaluate(trained_model, (changed, y[:32]), **kw)
