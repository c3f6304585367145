"""Benchmark: our Carlini-Wagner L2 against Foolbox's and ART's, side by side, in one process.

Same model (the tiny CNN of ``tests/conftest.py``, trained here with its trainer and seed on the
scikit-learn digits), same inputs (every test image of conftest's split that the model classifies
correctly), same budgets: ``binary_search_steps`` and ``steps`` (ART: ``max_iter``).

* ours: ``CarliniWagnerL2(binary_search_steps=B, steps=S)`` with its defaults
  (``learning_rate=0.1``, ``initial_const=0.1``, ``abort_early=True``);
* Foolbox: ``L2CarliniWagnerAttack(binary_search_steps=B, steps=S, stepsize=0.01, confidence=0,
  initial_const=1e-3, abort_early=True)`` on ``PyTorchModel(model, bounds=(0, 1))`` with
  ``epsilons=None``. Foolbox returns an all-zero image where it found nothing: such outputs
  count as failures. The targets compare ours with this row;
* reference rows (skip them with ``--no-extra``): ours with ``abort_early=False``, ours with
  Foolbox's step size 0.01, Foolbox with our learning rate 0.1, and Foolbox with the model's
  parameters frozen (Foolbox back-propagates with ``loss.backward()``, which also computes
  the parameters' gradients when they require it);
* ART: ``CarliniL2Method(binary_search_steps=B, max_iter=S, learning_rate=0.01,
  initial_const=1e-3, batch_size=n)`` on a ``PyTorchClassifier``; ART is slow (a line search
  of several extra forwards per iteration), so it runs once, on the first ``--art-images``
  inputs only, and ours is timed again on that subset.

Success = the returned input differs from the clean one and the model misclassifies it
(re-predicted here); median and mean L2 over the successes of each attack; wall time = best of
``--repeats`` interleaved rounds after a warm-up (process CPU time reported too).

Usage::

    python benchmarks/bench_cw.py                    # S=100, writes benchmarks/results/cw_l2.{json,md}
    python benchmarks/bench_cw.py --steps 50 --no-write
"""

from __future__ import annotations

import os

# The machine may be shared: with OpenMP's default active waiting, two threads spinning against
# other processes make timings vary tenfold. Passive waiting applies to all three libraries alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import hashlib
import json
import logging
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

log = logging.getLogger("bench_cw")

TARGETS = {"success_ratio_min": 1.0, "median_l2_ratio_max": 1.02, "time_ratio_max": 0.25}


def _load_model_and_data() -> tuple[nn.Module, Tensor, Tensor]:
    """The session model of the tests and the correctly classified test images."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from conftest import _digits, train_tiny  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    model = train_tiny(seed=0)
    _, _, x_test, y_test = _digits()
    with torch.no_grad():
        correct = model(x_test).argmax(1) == y_test
    return model, x_test[correct].contiguous(), y_test[correct].contiguous()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_state() -> dict[str, Any]:
    """The commit of the checkout and whether the attack's source differs from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "attack_source_status": git("status", "--porcelain", "--", "attacks/carlini_wagner.py") or "clean",
        "attack_source_sha256": hashlib.sha256((ROOT / "attacks" / "carlini_wagner.py").read_bytes()).hexdigest(),
    }


def _evaluate(model: nn.Module, x: Tensor, y: Tensor, adv: Tensor, *, zero_is_failure: bool) -> dict[str, Any]:
    with torch.no_grad():
        pred = model(adv).argmax(1)
    dist = (adv - x).flatten(1).norm(dim=1)
    success = (pred != y) & (dist > 0)
    if zero_is_failure:  # Foolbox's "nothing found" output
        success &= adv.flatten(1).abs().amax(dim=1) > 0
    n_succ = int(success.sum())
    return {
        "images": int(x.shape[0]),
        "successes": n_succ,
        "success_rate": n_succ / max(int(x.shape[0]), 1),
        "median_l2": float(dist[success].median()) if n_succ else float("nan"),
        "mean_l2": float(dist[success].mean()) if n_succ else float("nan"),
    }


def _interleaved(
    runs: dict[str, Callable[[], Tensor]], repeats: int
) -> dict[str, tuple[Tensor, list[float], list[float]]]:
    """Run each attack once per round, ``repeats`` rounds, so that a change of load hits all of
    them alike. Returns, per attack, its last output, wall times and process CPU times."""
    out: dict[str, tuple[Tensor, list[float], list[float]]] = {}
    for round_ in range(repeats):
        for key, fn in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            adv = fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            _, walls, cpus = out.get(key, (adv, [], []))
            out[key] = (adv, [*walls, wall], [*cpus, cpu])
            log.info("round %d: %s %.3f s (cpu %.3f s)", round_ + 1, key, wall, cpu)
    return out


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


ROWS = (
    ("ours", "**ours**: CarliniWagnerL2 defaults (learning_rate=0.1)"),
    ("foolbox", "**Foolbox** L2CarliniWagnerAttack (stepsize=0.01)"),
    ("ours_full", "ours, abort_early=False (every step of every search step)"),
    ("ours_lr001", "ours, learning_rate=0.01 (Foolbox's step size)"),
    ("foolbox_lr01", "Foolbox, stepsize=0.1 (our learning rate)"),
    ("foolbox_frozen", "Foolbox, model parameters frozen (requires_grad=False)"),
)


def _markdown(report: dict[str, Any]) -> str:
    s, env = report["settings"], report["environment"]
    fb_time = report["foolbox"]["time_s"]
    rows = [
        "| attack | images | success rate | median L2 | mean L2 | wall time (s) | time / Foolbox | CPU time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in ROWS:
        if key in report:
            r = report[key]
            rows.append(
                f"| {label} | {r['images']} | {r['success_rate']:.4f} | {r['median_l2']:.4f} | {r['mean_l2']:.4f} | "
                f"{r['time_s']:.2f} | {r['time_s'] / fb_time:.3f} | {r['cpu_time_s']:.2f} |"
            )
    if "art" in report:
        a, o = report["art"], report["ours_on_art_subset"]
        rows.append(
            f"| ART CarliniL2Method (first {a['images']} images, one run) | {a['images']} | "
            f"{a['success_rate']:.4f} | {a['median_l2']:.4f} | {a['mean_l2']:.4f} | {a['time_s']:.2f} | | "
            f"{a['cpu_time_s']:.2f} |"
        )
        rows.append(
            f"| ours on the same {o['images']} images | {o['images']} | {o['success_rate']:.4f} | "
            f"{o['median_l2']:.4f} | {o['mean_l2']:.4f} | {o['time_s']:.2f} | | {o['cpu_time_s']:.2f} |"
        )
    r, t = report["ratios_ours_over_foolbox"], report["targets_met"]
    lines = [
        "# Carlini-Wagner L2: ours vs Foolbox vs ART",
        "",
        (
            f"Tiny CNN of `tests/conftest.py` on scikit-learn digits (8x8), all {report['ours']['images']} correctly "
            f"classified test images; binary_search_steps={s['binary_search_steps']}, steps={s['steps']} for every "
            f"attack (ART: max_iter={s['steps']}); {env['threads']} threads (OMP_WAIT_POLICY={env['omp_wait_policy']}) "
            f"on {env['cpu']}, torch {env['torch']}, device {env['device']}. Wall time: best of {s['repeats']} "
            "interleaved rounds after a warm-up. Success: the output differs from the input and is misclassified "
            "(Foolbox's all-zero output for 'not found' counts as a failure); median and mean L2 over each "
            "attack's successes."
        ),
        "",
        *rows,
        "",
        f"Ours / Foolbox: success {r['success']:.3f} (target >= 1), median L2 {r['median_l2']:.3f} "
        f"(target <= 1.02; mean L2 {r['mean_l2']:.3f}), wall time {r['time']:.3f} (target <= 0.25; "
        f"CPU time {r['cpu_time']:.3f}). Targets met: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in t.items())
        + ".",
        "",
        "Settings:",
        "",
        *(f"- {k}: `{s[k]}`" for k in ("ours", "foolbox", "art") if k in s),
        "",
        "Command:",
        "",
        "```",
        report["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per binary-search step (S)")
    parser.add_argument("--binary-search-steps", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (the best time of each attack is kept)")
    parser.add_argument("--art-images", type=int, default=64, help="images for ART (0 skips ART)")
    parser.add_argument("--no-extra", action="store_true", help="only ours and Foolbox, without the reference rows")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-write", action="store_true", help="print only, do not write the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_at_start = list(os.getloadavg())

    import foolbox as fb

    from robustness.attacks.carlini_wagner import CarliniWagnerL2

    torch.set_num_threads(args.threads)
    model, x, y = _load_model_and_data()
    B, S = args.binary_search_steps, args.steps
    log.info("%d images, %d threads, binary_search_steps=%d, steps=%d", x.shape[0], args.threads, B, S)

    ours = CarliniWagnerL2(binary_search_steps=B, steps=S)
    ours_full = CarliniWagnerL2(binary_search_steps=B, steps=S, abort_early=False)
    ours_lr001 = CarliniWagnerL2(binary_search_steps=B, steps=S, learning_rate=0.01)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")

    def foolbox_cw(stepsize: float) -> Any:
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=B, steps=S, stepsize=stepsize, confidence=0, initial_const=1e-3, abort_early=True
        )

    fattack, fattack_lr01 = foolbox_cw(0.01), foolbox_cw(0.1)

    def run_foolbox(attack: Any = fattack) -> Tensor:
        _, adv, _ = attack(fmodel, x, y, epsilons=None)
        model.zero_grad(set_to_none=True)  # Foolbox's loss.backward() fills the parameters' .grad
        return adv.detach()

    def run_foolbox_frozen() -> Tensor:
        flags = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(False)
        try:
            return run_foolbox()
        finally:
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)

    runs: dict[str, Callable[[], Tensor]] = {"ours": lambda: ours(model, x, y), "foolbox": run_foolbox}
    if not args.no_extra:
        runs["ours_full"] = lambda: ours_full(model, x, y)
        runs["ours_lr001"] = lambda: ours_lr001(model, x, y)
        runs["foolbox_lr01"] = lambda: run_foolbox(fattack_lr01)
        runs["foolbox_frozen"] = run_foolbox_frozen
    # warm-up (allocator, oneDNN primitives), then the timed rounds
    ours(model, x[:16], y[:16])
    fattack(fmodel, x[:16], y[:16], epsilons=None)
    model.zero_grad(set_to_none=True)
    report: dict[str, Any] = {}
    for key, (adv, walls, cpus) in _interleaved(runs, args.repeats).items():
        report[key] = {
            **_evaluate(model, x, y, adv, zero_is_failure=key.startswith("foolbox")),
            "time_s": min(walls), "times_s": walls, "cpu_time_s": min(cpus), "cpu_times_s": cpus,
        }
        log.info("%s: %s", key, report[key])

    if args.art_images > 0:
        from art.attacks.evasion import CarliniL2Method
        from art.estimators.classification import PyTorchClassifier

        n = min(args.art_images, x.shape[0])
        xa, ya = x[:n], y[:n]
        classifier = PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10,
            clip_values=(0.0, 1.0), device_type="cpu",
        )
        art_attack = CarliniL2Method(
            classifier, binary_search_steps=B, max_iter=S, learning_rate=0.01, initial_const=1e-3,
            batch_size=n, verbose=False,
        )
        art_run = _interleaved({"art": lambda: torch.from_numpy(art_attack.generate(xa.numpy(), y=ya.numpy()))}, 1)
        sub = _interleaved({"ours_on_art_subset": lambda: ours(model, xa, ya)}, args.repeats)
        for key, (adv, walls, cpus) in {**art_run, **sub}.items():
            report[key] = {
                **_evaluate(model, xa, ya, adv, zero_is_failure=False),
                "time_s": min(walls), "times_s": walls, "cpu_time_s": min(cpus), "cpu_times_s": cpus,
            }
            log.info("%s: %s", key, report[key])

    o, f = report["ours"], report["foolbox"]
    ratios = {
        "success": o["success_rate"] / f["success_rate"] if f["success_rate"] else float("inf"),
        "median_l2": o["median_l2"] / f["median_l2"],
        "mean_l2": o["mean_l2"] / f["mean_l2"],
        "time": o["time_s"] / f["time_s"],
        "cpu_time": o["cpu_time_s"] / f["cpu_time_s"],
    }
    report["ratios_ours_over_foolbox"] = ratios
    report["targets"] = TARGETS
    report["targets_met"] = {
        "success": o["successes"] >= f["successes"],
        "median_l2": ratios["median_l2"] <= TARGETS["median_l2_ratio_max"],
        "time": ratios["time"] <= TARGETS["time_ratio_max"],
    }
    report["settings"] = {
        "binary_search_steps": B, "steps": S, "repeats": args.repeats, "art_images": args.art_images,
        "ours": ours.describe(),
        "foolbox": f"L2CarliniWagnerAttack(binary_search_steps={B}, steps={S}, stepsize=0.01, confidence=0, "
        "initial_const=1e-3, abort_early=True) on PyTorchModel(model, bounds=(0, 1)), epsilons=None",
        "art": f"CarliniL2Method(binary_search_steps={B}, max_iter={S}, learning_rate=0.01, initial_const=1e-3, "
        f"batch_size={min(args.art_images, x.shape[0])}) on PyTorchClassifier(clip_values=(0, 1))",
    }
    report["environment"] = {
        "torch": torch.__version__, "foolbox": fb.__version__, "python": platform.python_version(),
        "device": "cpu", "cpu": _cpu_model(), "threads": args.threads, "cores": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "started_utc": started.isoformat(timespec="seconds"),
        "git": _git_state(),
    }
    try:
        import art

        report["environment"]["art"] = art.__version__
    except ImportError:
        pass
    cmd = [os.path.relpath(os.path.abspath(sys.argv[0]), ROOT), *(sys.argv[1:] if argv is None else argv)]
    report["command"] = "python " + " ".join(shlex.quote(a) for a in cmd)
    log.info("ratios ours/foolbox: %s; targets met: %s", ratios, report["targets_met"])

    if not args.no_write:
        # the report first, the table second: both or neither describe the same run
        _write_atomic(RESULTS / "cw_l2.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
        _write_atomic(RESULTS / "cw_l2.md", _markdown(report))
        log.info("wrote %s and %s", RESULTS / "cw_l2.json", RESULTS / "cw_l2.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
