"""The evaluation runner: every attack over a sweep of budgets, verified, per sample.

``evaluate`` is the one entry point that Python code, the CLI and the pytest plugin call; its
settings travel as one :class:`~robustness.config.EvalConfig`, and one ``_Evaluation`` object holds
an evaluation's state while it runs. What it spends and what it trusts:

* Samples misclassified clean are never attacked.
* Budgets are swept in increasing order; a sample that an attack broke inside a smaller
  ball counts as broken inside every larger one, so each attack only works on the samples it
  has not broken yet, and starts from the best point it found for them at the previous budget
  (which lies inside the larger ball) instead of from scratch. A minimization attack
  (Carlini-Wagner) runs once and answers every budget by the size of the perturbation it
  found (:mod:`robustness.sweep`); with ``epsilons="curve"`` it runs without a budget, and the
  smallest verified distances give the whole robustness curve (:mod:`robustness.curve`).
* Nothing an attack returns is trusted: the runner projects it onto the budget, clips it
  to the bounds, re-predicts, and counts only what it verified.
* ``robust_accuracy`` is the per-sample worst case over all attacks; the report adds each
  attack alone, the cumulative accuracy after each attack in order, per-class figures, the
  sizes of the successful perturbations, the model calls and time of each attack, and the
  verdicts of the sanity checks (:mod:`robustness.checks`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustness.attacks.base import Attack
from robustness.config import EvalConfig, make_config, resolve_attacks
from robustness.data import DataLike, as_loader, iterate_batches
from robustness.defenses.preprocessing import describe_defenses
from robustness.defenses.preprocessing import gradient_mode as defense_gradient_mode
from robustness.errors import InputError, RobustnessWarning
from robustness.model import CallCounter, evaluation_mode, model_device, model_dtype, reseed_random_modules
from robustness.model_info import describe_model, warn_if_initial
from robustness.records import CHECK_SUBSET, BatchRecord, assemble, batch_examples, digest
from robustness.report import Check, Report
from robustness.seeding import derive_seed
from robustness.sweep import SweepResult, sweep
from robustness.validation import check_batch, check_epsilons, check_logits, looks_like_probabilities

__all__ = ["evaluate", "resolve_attacks", "check_epsilons"]

log = logging.getLogger(__name__)

#: the batch size ``batch_size=None`` starts from: on CUDA it is halved until a batch fits
AUTO_BATCH_CUDA = 4096
AUTO_BATCH_CPU = 256


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model: nn.Module, data: DataLike, config: EvalConfig | None = None, **overrides: Any) -> Report:
    """Robust accuracy of ``model`` on ``data`` against ``attacks`` at each budget in ``epsilons``.

    The settings come as keywords (``attacks`` and ``epsilons`` are then required), as one
    :class:`~robustness.config.EvalConfig`, or as a config with keywords on top that replace its
    fields; an unknown keyword is a ``TypeError`` that names the closest setting.

    Args:
        model: an ``nn.Module`` mapping pixel-space inputs ``(N, ...)`` to logits ``(N, classes)``;
            wrap it in :class:`robustness.NormalizedModel` if it expects normalized inputs.
        data: an ``(x, y)`` pair of tensors, a ``Dataset`` or a ``DataLoader``.
        config: the settings below as one object (:class:`robustness.EvalConfig`).
        attacks: attack objects or registry names (``"fgsm"``, ``"pgd"``, ``"cw"``).
        epsilons: budgets in the ``norm``; 0 means clean accuracy. ``"curve"`` (alone, or among the
            budgets: ``["curve", 0, 0.1, 0.2]``) also measures the robustness curve
            (:class:`robustness.curve.Curve`, ``Report.curve``): the minimization attacks (at least one
            is required) run once per batch without a budget, each sample's smallest verified adversarial
            distance over all attacks gives the robust accuracy at every budget, and the report adds the
            median distance and, at each listed budget, how far the minimization attacks' curve lies
            above the fixed-budget attacks' worst case. Fixed-budget attacks run at the listed budgets
            (required when there are any).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        bounds: the valid input range; inputs outside it are an error.
        batch_size: examples per batch when ``data`` is not already a ``DataLoader``; ``None``
            (the default) chooses it: on CUDA the largest that fits, found by trying from 4,096
            (a batch that runs out of GPU memory is split in halves and retried, and later
            batches use the smaller size; finished batches are kept); on the CPU 256.
        device: where to run; ``None`` keeps the model's device. The model is moved back after.
        seed: seeds every random draw (per batch, attack and budget), recorded in the report.
        progress: show tqdm bars on stderr, with a total and the time left: over the batches (naming the
            attack at work) and over the sanity checks; only when stderr is a terminal.
        gradient_mode: how attacks differentiate through preprocessing defenses
            (:class:`robustness.defenses.Defended` anywhere in ``model``): ``"adaptive"`` (BPDA and EOT as each
            defense declares; the honest number), ``"naive"`` (plain autograd: what a defense-unaware
            attack sees), or ``None`` to leave each ``Defended`` in its own mode. Restored afterwards;
            the report records it and every defense (``Report.defenses``).
        checks: run the sanity checks of :mod:`robustness.checks` on a small subset and record
            their verdicts in ``Report.checks``.
        strict: a check that would warn fails instead (``status="failed"``); the CLI's
            ``--strict`` and the pytest plugin turn that into a failure.
        schedule: how fixed-budget attacks visit the budgets (:mod:`robustness.sweep`):
            ``"ascending"`` (each budget in turn, warm-started from the previous one: the
            strongest) or ``"bisect"`` (bisection per sample: about ``log2(budgets + 1)``
            attacks per sample, for long sweeps). Minimization attacks run once either way.
        state: a directory that records every finished batch atomically; an evaluation killed
            at any moment and run again with the same ``state`` (and the same model, data and
            settings) resumes and ends with the same report (:mod:`robustness.state`).
        amp: ``"bf16"`` runs the model under bfloat16 autocast (attacks still see float32
            logits); ``None`` (default) runs in full precision (:mod:`robustness.acceleration`).
        channels_last: run the model in the ``channels_last`` memory format (4-D inputs).
        compile: ``torch.compile`` the model for the evaluation.
        distributed: shard the batches over the ranks of the initialized ``torch.distributed``
            process group (``torchrun``) and reduce the results on rank 0, which also runs the
            checks; every rank returns the same report. ``None`` (default): when a group of
            more than one process is initialized (:mod:`robustness.distributed`).
        cascade: run each attack only on the samples the earlier ones left robust, as AutoAttack
            does: at each budget, attack ``k`` skips the samples attacks ``1..k-1`` broke within it,
            and a minimization attack gets per sample the largest budget at which it is still
            unbroken (it may stop there). Cheaper; ``robust_accuracy`` keeps its meaning (the
            per-sample worst case), while ``Report.by_attack`` then holds the cumulative accuracy
            after each attack (``Report.cascade`` says so). ``None`` (default): the preset's default
            (``standard``, ``plus``, ``rand``, ``standard-nofab`` cascade; ``smoke`` and attack lists do not).

    Returns:
        A :class:`Report`. The model comes back with its parameters, buffers, train/eval mode
        and device unchanged.

    Example::

        report = robustness.evaluate(model, (x, y), attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2])
        print(report.table())
        config = robustness.EvalConfig(attacks="smoke", epsilons=[0, 0.1])
        l2 = robustness.evaluate(model, (x, y), config, norm="l2", epsilons=[0, 1])
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    config = make_config(config, overrides)
    _check_defense_bounds(model, config.bounds)
    if (dtype := model_dtype(model)) in (torch.float16, torch.bfloat16):
        raise InputError(f"the model's parameters are {dtype}: attacks in half precision overshoot "
                         "their budgets and underflow; evaluate model.float() (amp='bf16' runs it in bfloat16 "
                         "autocast with float32 inputs and verified budgets)")
    device = config.device if config.device is not None else model_device(model)
    batch_size = config.batch_size
    if batch_size is None:
        batch_size = AUTO_BATCH_CUDA if device.type == "cuda" else AUTO_BATCH_CPU
    loader = as_loader(data, batch_size, pin_memory=device.type == "cuda")
    group = _process_group(config.distributed, device)
    state = _open_state(config.state, model, config.fingerprint(batch_size), group)
    start = time.perf_counter()
    mode = config.gradient_mode
    modes = contextlib.nullcontext() if mode is None else defense_gradient_mode(model, mode)
    with state as store, evaluation_mode(model, device), modes, _accelerated(model, config, device) as fast:
        defenses_used = describe_defenses(model)  # in the modes the attacks run under
        run = _Evaluation(model, fast, config, device, batch_size, group=group, store=store,
                          notes=_defense_notes(defenses_used))
        records = run.collect(loader)
        report = None if records is None else run.report(records, loader, defenses_used, start)
        if group is not None:
            report = group.share_report(report)
    if report is None:  # rank 0 assembles the report and shares it with every rank
        raise RuntimeError("no report reached this rank: the distributed evaluation did not complete")
    return report


_PROBABILITIES = ("the model seems to output probabilities (rows are non-negative and sum to 1): gradients "
                  "through a softmax saturate and make attacks look weaker; return logits instead")


@dataclass
class _Evaluation:
    """One evaluation in progress: the models it runs, its settings and what it has found so far.

    :meth:`collect` evaluates the loader's batches as records of contiguous ranges of examples
    (:meth:`evaluate_range`); :meth:`report` assembles them and runs the sanity checks. Ranges
    already finished (``store``: a resumed evaluation) are skipped. A range that runs out of GPU
    memory is split in halves and retried, and later ranges use the smaller size. Randomness
    depends on a range's offset only, so a batch evaluated on any rank, or before and after a
    resume, draws the same numbers.
    """

    model: nn.Module  #: the user's model (the sanity checks run it)
    fast: nn.Module  #: what the attacks run: ``model`` accelerated as the config asks
    config: EvalConfig
    device: torch.device
    batch_size: int  #: the batch size asked for (or chosen for the device)
    group: Any = None  #: the :class:`robustness.distributed.ProcessGroup` to shard over, if any
    store: Any = None  #: the :class:`robustness.state.EvaluationState`, if any
    notes: list[str] = field(default_factory=list)  #: the report's warnings so far
    records: list[BatchRecord] = field(default_factory=list)  #: the ranges this process evaluated
    working: int | None = None  #: the batch size after an out-of-memory error
    counted: CallCounter = field(init=False)
    attacks: dict[str, Attack] = field(init=False)
    dtype: torch.dtype = field(init=False)
    done: dict[int, BatchRecord] = field(init=False)  #: ranges finished before a resume, by offset
    bar: Any = field(init=False)  #: the tqdm bar over the batches (disabled without :attr:`bars`)

    def __post_init__(self) -> None:
        self.counted = CallCounter(self.fast)
        self.attacks = self.config.named_attacks
        self.dtype = model_dtype(self.fast)  # inputs are cast to it (float32 unless the model is float64, ...)
        self.done = dict(self.store.finished) if self.store is not None else {}
        self.bar = tqdm(disable=True)

    @property
    def bars(self) -> bool:
        """Whether to show progress bars: asked for, stderr a terminal, and rank 0 of a distributed run."""
        group = self.group
        return self.config.progress and sys.stderr.isatty() and (group is None or group.rank == 0)

    def collect(self, loader: Any) -> list[BatchRecord] | None:
        """Every range's record, in any order (rank 0 of a distributed run: every rank's); ``None`` on
        the other ranks."""
        group = self.group
        self.bar = tqdm(iterate_batches(loader), desc="evaluate", unit="batch", total=_batch_count(loader),
                        disable=not self.bars)
        offset = 0
        with self.bar:
            for b, (x, y) in enumerate(self.bar):
                check_batch(x, y, self.config.bounds, b)
                n = x.shape[0]
                if n and (group is None or group.owns(b)):
                    for record in self.evaluate_batch(x, y, b, offset):
                        if self.store is not None:
                            self.store.save(record)
                        self.records.append(record)
                offset += n
        beyond = sorted(o for o in self.done if o >= offset)
        if beyond:
            raise InputError(f"the evaluation state holds examples from {beyond[0]} on, but the data has only "
                             f"{offset}: use a new state directory or the same data")
        records = self.records
        if group is None or group.rank == 0:
            records = records + list(self.done.values())  # finished before a resume: kept by rank 0 only
        return records if group is None else group.gather_records(records)

    def used_batch_size(self, loader: Any) -> int:
        size = getattr(loader, "batch_size", None) or self.batch_size or AUTO_BATCH_CPU
        return min(size, self.working) if self.working else size

    def evaluate_batch(self, x: Tensor, y: Tensor, index: int, offset: int) -> Iterator[BatchRecord]:
        """The records of the ranges of one loader batch that no finished record covers."""
        for start, stop in _uncovered(x, y, offset, self.done):
            i = start
            while i < stop:
                size = min(stop - i, self.working or stop - i)
                try:
                    record = self.evaluate_range(x[i:i + size], y[i:i + size], index, offset + i)
                except torch.cuda.OutOfMemoryError:
                    if size == 1:
                        raise InputError("one example does not fit in GPU memory: use a smaller model or "
                                         "input, or evaluate on the CPU (device='cpu')") from None
                    self.working = size // 2
                    torch.cuda.empty_cache()
                    log.warning("out of GPU memory with a batch of %d: retrying with %d (finished batches are kept)",
                                size, self.working)
                    continue
                yield record
                i += size

    def evaluate_range(self, x: Tensor, y: Tensor, index: int, offset: int) -> BatchRecord:
        """Clean pass and every attack's budget sweep on one range of examples."""
        config, budgets = self.config, self.config.budgets
        x = x.to(self.device, non_blocking=True).to(self.dtype)
        y = y.to(self.device, non_blocking=True).long()
        reseed_random_modules(self.fast, derive_seed(config.seed, "random-modules", offset))  # depends on the range only
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.fast(x)
        num_classes = check_logits(logits, x.shape[0], y)
        pred = logits.argmax(dim=1)
        correct = pred == y
        _sync(self.device)
        seconds = {"clean": time.perf_counter() - t0}
        found: dict[str, SweepResult] = {}
        calls: dict[str, dict[str, int]] = {}
        # cascade: per sample, the smallest budget index at which an earlier attack broke it
        earlier = torch.full_like(y, len(budgets)) if config.cascades else None
        for a, (name, attack) in enumerate(self.attacks.items()):
            self.bar.set_postfix_str(name)
            t0 = time.perf_counter()
            before = self.counted.snapshot()
            found[name] = sweep(self.counted, attack, x, y, correct, budgets, bounds=config.bounds, norm=config.norm,
                                seed=derive_seed(config.seed, "attack", offset, a), schedule=config.schedule,
                                curve=config.curve, cascade_from=earlier)
            if earlier is not None:
                earlier = torch.minimum(earlier, found[name].broken)
            _sync(self.device)
            seconds[name] = time.perf_counter() - t0
            calls[name] = dict(zip(("calls", "samples", "gradient_samples"),
                                   (after - b for after, b in zip(self.counted.snapshot(), before))))
        names = list(self.attacks)
        take = min(CHECK_SUBSET - offset, x.shape[0])
        subset = None
        if take > 0:
            subset = {"x": x[:take].cpu().clone(), "y": y[:take].cpu().clone(), "correct": correct[:take].cpu().clone(),
                      "broken": {k: found[k].broken[:take].cpu().clone() for k in names}}
        return BatchRecord(
            index=index, offset=offset, labels=y.cpu(), clean=pred.cpu(),
            broken={k: r.broken.cpu() for k, r in found.items()},
            size={k: r.size.cpu() for k, r in found.items()},
            adv_pred={k: r.prediction.cpu() for k, r in found.items()},
            max_used={k: list(r.max_used) for k, r in found.items()},
            seconds=seconds, calls=calls, num_classes=num_classes, inputs=digest(x.float()),
            probabilities=looks_like_probabilities(logits),
            examples=batch_examples(x, y, found, names, budgets, offset) if budgets else [],
            subset=subset,
            distance={k: r.distance.cpu() for k, r in found.items()},
        )

    def report(self, records: list[BatchRecord], loader: Any, defenses: list[dict[str, Any]], start: float) -> Report:
        """The report of ``records`` (every range of the data), with the sanity checks' verdicts."""
        config, notes = self.config, self.notes
        if not records:
            raise InputError("the data yielded no examples: nothing to evaluate")
        if any(r.probabilities for r in records):
            warnings.warn(_PROBABILITIES, RobustnessWarning, stacklevel=3)  # at evaluate()'s caller
            notes.append(_PROBABILITIES)
        notes += list(getattr(self.fast, "notes", []))  # e.g. a torch.compile fallback
        if config.amp is not None:
            notes.append(f"amp={config.amp!r}: the robust accuracy is that of the model run under {config.amp} "
                         f"autocast (adversarial examples verified in {config.amp}; the sanity checks ran in float32)")
        report, assembled = assemble(records, config, batch_size=self.used_batch_size(loader),
                                     device=str(self.device), notes=notes, defenses=defenses)
        report.model = describe_model(self.model)  # weights SHA-256, normalization, untrained BatchNorm
        report.warnings += warn_if_initial(report.model)
        if config.checks and config.curve and not config.budgets:
            report.warnings.append("the sanity checks run at listed budgets and epsilons='curve' lists none: list "
                                   "budgets with the curve (epsilons=['curve', 0, 0.1]) to run them")
        if config.checks and config.budgets and assembled.subset is not None:
            t0 = time.perf_counter()
            report.checks = self.run_checks(assembled.subset, report)
            report.timings["checks"] = time.perf_counter() - t0
        report.timings["total"] = time.perf_counter() - start
        return report

    def run_checks(self, subset: dict[str, Any], report: Report) -> list[Check]:
        """The sanity checks of :mod:`robustness.checks` on ``subset`` (the first examples), with the user's model."""
        from robustness.checks import run_checks

        seed, device = self.config.seed, self.device
        checks_seed = derive_seed(seed, "checks")
        reseed_random_modules(self.model, checks_seed)
        return run_checks(
            self.model, subset["x"].to(device), subset["y"].to(device), attacks=self.attacks,
            broken_at={k: v.to(device) for k, v in subset["broken"].items()}, correct=subset["correct"].to(device),
            budgets=[e for e in report.epsilons if e > 0], robust_accuracy=report.robust_accuracy,
            by_attack=report.by_attack, norm=report.norm, bounds=report.bounds, num_classes=report.num_classes,
            seed=checks_seed, strict=self.config.strict, progress=self.bars, cascade=self.config.cascades,
        )


def _batch_count(loader: Any) -> int | None:
    """The number of batches ``loader`` yields, when it knows (a ``DataLoader`` of a sized dataset does)."""
    try:
        return len(loader)
    except TypeError:
        return None


def _uncovered(x: Tensor, y: Tensor, offset: int, done: dict[int, BatchRecord]) -> list[tuple[int, int]]:
    """The ranges ``[start, stop)`` of a batch (positions within it) that no finished record covers;
    the inputs and labels of the covered ones must be those the records were made from."""
    n = x.shape[0]
    covered = []
    for o, record in done.items():
        if offset <= o < offset + n:
            start = o - offset
            same = start + record.n <= n and torch.equal(record.labels, y[start:start + record.n].cpu().long())
            if same and record.inputs:
                same = record.inputs == digest(x[start:start + record.n].float())
            if not same:
                raise InputError(
                    f"the evaluation state does not match the data: examples {o}..{o + record.n - 1} have other "
                    f"inputs or labels (or batch boundaries) than when the state was written; use a new state "
                    f"directory or the same data in the same order"
                )
            covered.append((start, start + record.n))
    ranges, i = [], 0
    for start, stop in sorted(covered):
        if start > i:
            ranges.append((i, start))
        i = max(i, stop)
    if i < n:
        ranges.append((i, n))
    return ranges


def _process_group(requested: bool | None, device: torch.device) -> Any:
    """The torch.distributed group to shard over, or ``None`` for a single-process evaluation."""
    if requested is False:
        return None
    import torch.distributed as dist

    if requested is None and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    from robustness.distributed import ProcessGroup

    return ProcessGroup.current(device)


@contextlib.contextmanager
def _open_state(path: Path | None, model: nn.Module, settings: dict[str, Any], group: Any) -> Iterator[Any]:
    """The evaluation state in ``path`` (``None``: no state) for ``model`` evaluated with ``settings``
    (``EvalConfig.fingerprint``), locked until the evaluation ends.

    In a distributed evaluation rank 0 opens and locks the directory before any other rank touches
    it, and tells them whether it could: they open it without the lock (rank 0 holds it for the
    whole run) or raise rank 0's error.
    """
    if path is None:
        yield None
        return
    from robustness.state import EvaluationState, model_fingerprint

    fingerprint = {**settings, "model": model_fingerprint(model)}
    if group is not None and group.rank != 0:
        failed = group.broadcast(None)
        if failed is not None:
            from robustness.distributed import CollectiveError

            is_input, message = failed
            raise InputError(message) if is_input else CollectiveError(f"rank 0 could not open the evaluation "
                                                                       f"state {path}: {message}")
        with EvaluationState.open(path, fingerprint, lock=False) as store:
            yield store
        return
    try:
        store = EvaluationState.open(path, fingerprint)
    except Exception as err:
        if group is not None:  # the other ranks raise it too, instead of evaluating into a directory not ours
            group.broadcast((isinstance(err, InputError), str(err)))
        raise
    with store:
        if group is not None:
            group.broadcast(None)
        yield store


def _accelerated(model: nn.Module, config: EvalConfig,
                 device: torch.device) -> contextlib.AbstractContextManager[nn.Module]:
    """The model to run (under autocast, in channels_last, compiled, as ``config`` asks); the user's
    model is restored on exit."""
    if config.amp is None and not config.channels_last and not config.compile:
        return contextlib.nullcontext(model)
    from robustness.acceleration import accelerated

    return accelerated(model, amp=config.amp, channels_last=config.channels_last, compile=config.compile,
                       device=device)


def _check_defense_bounds(model: nn.Module, bounds: tuple[float, float]) -> None:
    for d in describe_defenses(model):
        for p in d["preprocessors"]:
            if tuple(p["bounds"]) != bounds:
                raise InputError(
                    f"defense {p['name']} at {d['path'] or 'the model'} declares bounds {p['bounds']} but the "
                    f"evaluation uses {list(bounds)}: build the preprocessors with bounds={tuple(bounds)}"
                )


def _defense_notes(defenses_used: list[dict[str, Any]]) -> list[str]:
    notes = []
    if any(d["gradient_mode"] == "naive" for d in defenses_used):
        msg = (
            "gradient_mode='naive': attacks took plain autograd gradients through the preprocessing "
            "defenses, so a defense that only hides gradients looks robust; evaluate with "
            "gradient_mode='adaptive' (BPDA and EOT) for a trustworthy number"
        )
        warnings.warn(msg, RobustnessWarning, stacklevel=3)
        notes.append(msg)
    if any(p["randomized"] for d in defenses_used for p in d["preprocessors"]):
        notes.append("the model holds randomized defenses: every prediction (clean and verification) is one draw")
    return notes
