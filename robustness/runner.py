"""The evaluation runner: every attack over a sweep of budgets, verified, per sample.

``evaluate`` is the one entry point that Python code, the CLI and the pytest plugin call.
What it spends and what it trusts:

* Samples misclassified clean are never attacked.
* Budgets are swept in increasing order; a sample that an attack broke inside a smaller
  ball counts as broken inside every larger one, so each attack only works on the samples it
  has not broken yet, and starts from the best point it found for them at the previous budget
  (which lies inside the larger ball) instead of from scratch. A minimization attack
  (Carlini-Wagner) runs once and answers every budget by the size of the perturbation it
  found (:mod:`robustness.sweep`).
* Nothing an attack returns is trusted: the runner projects it onto the budget, clips it
  to the bounds, re-predicts, and counts only what it verified.
* ``robust_accuracy`` is the per-sample worst case over all attacks; the report adds each
  attack alone, the cumulative accuracy after each attack in order, per-class figures, the
  sizes of the successful perturbations, the model calls and time of each attack, and the
  verdicts of the sanity checks (:mod:`robustness.checks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from robustness.attacks.base import Attack
from robustness.attacks.presets import PRESETS, preset_entries
from robustness.defenses.preprocessing import check_gradient_mode, describe_defenses
from robustness.defenses.preprocessing import gradient_mode as defense_gradient_mode
from robustness.data import DataLike, as_loader, iterate_batches
from robustness.errors import InputError, RobustnessWarning
from robustness.model import CallCounter, evaluation_mode, model_device, model_dtype, reseed_random_modules
from robustness.model_info import describe_model, warn_if_initial
from robustness.norms import check_bounds, check_norm
from robustness.registry import ATTACKS
from robustness.records import CHECK_SUBSET, BatchRecord, assemble, batch_examples, digest
from robustness.report import Check, Report
from robustness.specs import parse_spec
from robustness.sweep import SCHEDULES, SweepResult, derive_seed, sweep
from robustness.validation import check_batch, check_epsilons, check_logits, check_seed, looks_like_probabilities

__all__ = ["evaluate", "resolve_attacks", "check_epsilons"]

log = logging.getLogger(__name__)

AttackLike = Union[str, Attack]
#: the batch size ``batch_size=None`` starts from: on CUDA it is halved until a batch fits
AUTO_BATCH_CUDA = 4096
AUTO_BATCH_CPU = 256
RANDOM_MODULES = 1 << 32  #: seed part of the randomized defenses' draws (attacks use 0, 1, ...)
def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_attacks(attacks: Sequence[AttackLike] | AttackLike, norm: str) -> dict[str, Attack]:
    """Attack objects keyed by unique report names; registry names are built for ``norm``.

    A string that names a preset (:data:`robustness.attacks.presets.PRESETS`: ``"standard"``, ``"smoke"``)
    expands, in place, to the preset's attacks.
    """
    if isinstance(attacks, (str, Attack)):
        attacks = [attacks]
    if not attacks:
        raise InputError("no attacks given: pass attack objects, registry names such as 'pgd' or a preset")
    items: list[tuple[AttackLike, dict[str, Any]]] = []
    for item in attacks:
        entries = preset_entries(item) if isinstance(item, str) else None
        if entries is not None and item.strip().lower() in ATTACKS:
            raise InputError(f"{item!r} is both a preset and a registered attack name: rename the attack")
        items += [(n, dict(kw)) for n, kw in entries] if entries is not None else [(item, {})]
    resolved: dict[str, Attack] = {}
    for item, settings in items:
        if isinstance(item, str) and item.strip().lower().startswith("art:"):
            from robustness.attacks.art_adapter import from_spec  # ART is imported only when asked for

            attack = from_spec(item.strip()[4:], norm=norm)
            label = attack.label
        elif isinstance(item, str):
            name, given = parse_spec(item.strip())
            name = name.lower()  # names are case-insensitive, settings (True, strings) are not
            overlap = sorted(set(given) & {"norm"})
            if overlap:
                raise InputError(f"attack {item!r}: the sweep sets {overlap[0]}: drop it from the settings")
            if name not in ATTACKS:
                raise InputError(
                    f"unknown attack {name!r}{_did_you_mean(name, [*ATTACKS.list(), *PRESETS])}: known attacks are "
                    f"{', '.join(ATTACKS.list())}; presets {', '.join(sorted(PRESETS))}; any ART evasion attack "
                    f"as art:Name(setting=value)"
                )
            try:
                attack = ATTACKS.create(name, norm=norm, **{**settings, **given})
            except TypeError as err:  # an unknown setting: the dataclass constructor names it
                cls = ATTACKS.load(name)
                fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
                hint = "".join(_did_you_mean(k, fields) for k in given if k not in fields)
                raise InputError(f"attack {item!r}: {err}{hint}; see `robustness list attacks` and the attack's "
                                 f"docstring for its settings") from None
            label = name if not given else name + "(" + item.strip().partition("(")[2].replace(" ", "")
        elif isinstance(item, Attack):
            attack = item
            label = item.label
        else:
            raise InputError(f"attacks must be Attack objects or registry names, got {type(item).__name__}")
        if attack.norm != norm:
            raise InputError(
                f"attack {label!r} works in the {attack.norm} norm but the sweep is {norm}: "
                f"build it with norm={norm!r} or drop it"
            )
        base, k = label, 2
        while label in resolved:
            label, k = f"{base}-{k}", k + 1
        resolved[label] = attack
    return resolved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    model: nn.Module,
    data: DataLike,
    *,
    attacks: Sequence[AttackLike] | AttackLike,
    epsilons: Sequence[float] | float,
    norm: str = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    gradient_mode: str | None = "adaptive",
    checks: bool = True,
    strict: bool = False,
    schedule: str = "ascending",
    state: str | Path | None = None,
    amp: str | None = None,
    channels_last: bool = False,
    compile: bool = False,
    distributed: bool | None = None,
) -> Report:
    """Robust accuracy of ``model`` on ``data`` against ``attacks`` at each budget in ``epsilons``.

    Args:
        model: an ``nn.Module`` mapping pixel-space inputs ``(N, ...)`` to logits ``(N, classes)``;
            wrap it in :class:`robustness.NormalizedModel` if it expects normalized inputs.
        data: an ``(x, y)`` pair of tensors, a ``Dataset`` or a ``DataLoader``.
        attacks: attack objects or registry names (``"fgsm"``, ``"pgd"``, ``"cw"``).
        epsilons: budgets in the ``norm``; 0 means clean accuracy.
        norm: ``"linf"`` or ``"l2"``.
        bounds: the valid input range; inputs outside it are an error.
        batch_size: examples per batch when ``data`` is not already a ``DataLoader``; ``None``
            (the default) chooses it: on CUDA the largest that fits, found by trying from 4,096
            (a batch that runs out of GPU memory is split in halves and retried, and later
            batches use the smaller size; finished batches are kept); on the CPU 256.
        device: where to run; ``None`` keeps the model's device. The model is moved back after.
        seed: seeds every random draw (per batch, attack and budget), recorded in the report.
        progress: show a tqdm bar over batches (only when stderr is a terminal).
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

    Returns:
        A :class:`Report`. The model comes back with its parameters, buffers, train/eval mode
        and device unchanged.

    Example::

        report = robustness.evaluate(model, (x, y), attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2])
        print(report.table())
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    norm = check_norm(norm)
    bounds = check_bounds(bounds)
    eps_all = check_epsilons(epsilons)
    seed = check_seed(seed)
    mode = None if gradient_mode is None else check_gradient_mode(gradient_mode)
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    _check_defense_bounds(model, bounds)
    if (dtype := model_dtype(model)) in (torch.float16, torch.bfloat16):
        raise InputError(f"the model's parameters are {dtype}: attacks in half precision overshoot "
                         "their budgets and underflow; evaluate model.float() (amp='bf16' runs it in bfloat16 "
                         "autocast with float32 inputs and verified budgets)")
    budgets = [e for e in eps_all if e > 0]
    attack_map = resolve_attacks(attacks, norm)
    run_device = torch.device(device) if device is not None else model_device(model)
    if run_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {run_device} was requested but CUDA is not available: use device='cpu'")
    if batch_size is None:
        batch_size = AUTO_BATCH_CUDA if run_device.type == "cuda" else AUTO_BATCH_CPU
    loader = as_loader(data, batch_size, pin_memory=run_device.type == "cuda")

    names = list(attack_map)
    config = dict(norm=norm, bounds=bounds, attacks={n: a.describe() for n, a in attack_map.items()}, seed=seed,
                  epsilons=eps_all, schedule=schedule, gradient_mode=mode)
    speedups = {"amp": amp, "channels_last": bool(channels_last), "compile": bool(compile)}
    group = _process_group(distributed, run_device)
    store = _open_state(state, model, {**config, "amp": amp}, batch_size) if state is not None else None
    done = dict(store.finished) if store is not None else {}
    records: list[BatchRecord] = []
    notes: list[str] = []
    start = time.perf_counter()
    modes = contextlib.nullcontext() if mode is None else defense_gradient_mode(model, mode)
    with evaluation_mode(model, run_device), modes, _accelerated(model, amp, channels_last, compile, run_device) as fast:
        defenses_used = describe_defenses(model)  # in the modes the attacks run under
        notes += _defense_notes(defenses_used)
        counted = CallCounter(fast)
        runner = _BatchRunner(fast, counted, attack_map, budgets, bounds=bounds, norm=norm, seed=seed,
                              device=run_device, schedule=schedule)
        bar = tqdm(iterate_batches(loader), desc="evaluate", unit="batch",
                   disable=not progress or not sys.stderr.isatty() or (group is not None and group.rank != 0))
        offset = 0
        for b, (x, y) in enumerate(bar):
            check_batch(x, y, bounds, b)
            n = x.shape[0]
            if n and (group is None or group.owns(b)):
                for record in runner.run(x, y, b, offset, done):
                    if store is not None:
                        store.save(record)
                    records.append(record)
            offset += n
        beyond = sorted(o for o in done if o >= offset)
        if beyond:
            raise InputError(f"the evaluation state holds examples from {beyond[0]} on, but the data has only "
                             f"{offset}: use a new state directory or the same data")
        if group is None or group.rank == 0:
            records += [r for r in done.values()]  # finished before a resume: kept by rank 0 only
        if group is not None:
            records = group.gather_records(records)
        report: Report | None = None
        if records is not None:
            if not records:
                raise InputError("the data yielded no examples: nothing to evaluate")
            if any(r.probabilities for r in records):
                warnings.warn(_PROBABILITIES, RobustnessWarning, stacklevel=2)
                notes.append(_PROBABILITIES)
            notes += list(getattr(fast, "notes", []))  # e.g. a torch.compile fallback
            if amp is not None:
                notes.append(f"amp={amp!r}: the robust accuracy is that of the model run under {amp} autocast "
                             f"(adversarial examples verified in {amp}; the sanity checks ran in float32)")
            report, assembled = assemble(
                records, names, eps_all, budgets, batch_size=runner.batch_size(loader, batch_size),
                device=str(run_device), notes=notes, defenses=defenses_used, speedups=speedups,
                **{k: v for k, v in config.items() if k != "epsilons"},
            )
            report.model = describe_model(model)  # weights SHA-256, normalization, untrained BatchNorm
            report.warnings += warn_if_initial(report.model)
            if checks and budgets and assembled.subset is not None:
                t0 = time.perf_counter()
                report.checks = _run_checks(model, assembled.subset, attack_map, report, run_device, seed, strict)
                report.timings["checks"] = time.perf_counter() - t0
            report.timings["total"] = time.perf_counter() - start
        if group is not None:
            report = group.share_report(report)
    if report is None:  # rank 0 assembles the report and shares it with every rank
        raise RuntimeError("no report reached this rank: the distributed evaluation did not complete")
    return report


_PROBABILITIES = ("the model seems to output probabilities (rows are non-negative and sum to 1): gradients "
                  "through a softmax saturate and make attacks look weaker; return logits instead")


class _BatchRunner:
    """Evaluates the examples of one loader batch, as records of contiguous ranges.

    Ranges already finished (``done``, keyed by offset: a resumed evaluation) are skipped. A
    range that runs out of GPU memory is split in halves and retried, and later ranges use the
    smaller size. Randomness depends on a range's offset only, so a batch evaluated on any rank,
    or before and after a resume, draws the same numbers.
    """

    def __init__(self, model: nn.Module, counted: CallCounter, attack_map: dict[str, Attack], budgets: list[float],
                 *, bounds: tuple[float, float], norm: str, seed: int, device: torch.device, schedule: str) -> None:
        self.model = model
        self.counted = counted
        self.attack_map = attack_map
        self.budgets = budgets
        self.bounds = bounds
        self.norm = norm
        self.seed = seed
        self.device = device
        self.schedule = schedule
        self.dtype = model_dtype(model)  # inputs are cast to it (float32 unless the model is float64, ...)
        self.working: int | None = None  # the batch size after an out-of-memory error

    def batch_size(self, loader: Any, requested: int | None) -> int:
        size = getattr(loader, "batch_size", None) or requested or AUTO_BATCH_CPU
        return min(size, self.working) if self.working else size

    def run(self, x: Tensor, y: Tensor, index: int, offset: int, done: dict[int, BatchRecord]) -> Iterator[BatchRecord]:
        for start, stop in _uncovered(x, y, offset, done):
            i = start
            while i < stop:
                size = min(stop - i, self.working or stop - i)
                try:
                    record = _evaluate_range(self, x[i:i + size], y[i:i + size], index, offset + i)
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


def _evaluate_range(run: _BatchRunner, x: Tensor, y: Tensor, index: int, offset: int) -> BatchRecord:
    """Clean pass and every attack's budget sweep on one range of examples."""
    model, budgets = run.model, run.budgets
    x = x.to(run.device, non_blocking=True).to(run.dtype)
    y = y.to(run.device, non_blocking=True).long()
    reseed_random_modules(model, derive_seed(run.seed, offset, RANDOM_MODULES))  # draws depend on the range only
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
    num_classes = check_logits(logits, x.shape[0], y)
    pred = logits.argmax(dim=1)
    correct = pred == y
    _sync(run.device)
    seconds = {"clean": time.perf_counter() - t0}
    found: dict[str, SweepResult] = {}
    calls: dict[str, dict[str, int]] = {}
    for a, (name, attack) in enumerate(run.attack_map.items()):
        t0 = time.perf_counter()
        before = run.counted.snapshot()
        found[name] = sweep(run.counted, attack, x, y, correct, budgets, bounds=run.bounds, norm=run.norm,
                            seed=derive_seed(run.seed, offset, a), schedule=run.schedule)
        _sync(run.device)
        seconds[name] = time.perf_counter() - t0
        calls[name] = dict(zip(("calls", "samples", "gradient_samples"),
                               (after - b for after, b in zip(run.counted.snapshot(), before))))
    names = list(run.attack_map)
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
    )


def _process_group(requested: bool | None, device: torch.device) -> Any:
    """The torch.distributed group to shard over, or ``None`` for a single-process evaluation."""
    if requested is False:
        return None
    import torch.distributed as dist

    if requested is None and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    from robustness.distributed import ProcessGroup

    return ProcessGroup.current(device)


def _open_state(path: str | Path, model: nn.Module, config: dict[str, Any], batch_size: int | None) -> Any:
    from robustness.state import EvaluationState, model_fingerprint

    fingerprint = {**config, "bounds": list(config["bounds"]), "batch_size": batch_size,
                   "model": model_fingerprint(model)}
    return EvaluationState.open(path, fingerprint)


def _accelerated(model: nn.Module, amp: str | None, channels_last: bool, compile: bool,
                 device: torch.device) -> contextlib.AbstractContextManager[nn.Module]:
    """The model to run (under autocast, in channels_last, compiled, as asked); the user's model is
    restored on exit."""
    if amp is None and not channels_last and not compile:
        return contextlib.nullcontext(model)
    from robustness.acceleration import accelerated

    return accelerated(model, amp=amp, channels_last=channels_last, compile=compile, device=device)


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


def _run_checks(model: nn.Module, subset: dict[str, Any], attack_map: dict[str, Attack], report: Report,
                device: torch.device, seed: int, strict: bool) -> list[Check]:
    from robustness.checks import run_checks

    reseed_random_modules(model, derive_seed(seed, 1 << 20, RANDOM_MODULES))
    return run_checks(
        model, subset["x"].to(device), subset["y"].to(device), attacks=attack_map,
        broken_at={k: v.to(device) for k, v in subset["broken"].items()}, correct=subset["correct"].to(device),
        budgets=[e for e in report.epsilons if e > 0], robust_accuracy=report.robust_accuracy,
        by_attack=report.by_attack, norm=report.norm, bounds=report.bounds, num_classes=report.num_classes,
        seed=derive_seed(seed, 1 << 20), strict=strict,
    )
