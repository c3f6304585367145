"""Shared helpers of the benchmarks: seeded models and data, timing, machine info, writers.

Every benchmark runs all of its contenders in one process, on the same model, inputs,
device and thread count, and reports ratios measured in that one run. Results are
written atomically (``robustness.io.atomic_write_text``) as JSON and Markdown.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustness.io import atomic_write_text

__all__ = [
    "RESULTS_DIR",
    "DigitsCNN",
    "Timing",
    "best_of",
    "best_of_interleaved",
    "busy_machine_note",
    "cifar_batch",
    "cifar_cnn",
    "command_line",
    "digits_split",
    "git_state",
    "machine_info",
    "markdown_table",
    "now_utc",
    "paired_ratio",
    "provenance_lines",
    "train_digits_cnn",
    "write_json",
    "write_markdown",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Seconds of ``repeats`` timed calls after ``warmup`` untimed ones.

    ``times`` are wall-clock seconds (``time.perf_counter``); ``cpu_times`` the process CPU
    seconds of the same calls (``time.process_time``, all threads together), a second view
    that is less disturbed by other processes competing for the cores.
    """

    best: float
    median: float
    times: tuple[float, ...]
    cpu_times: tuple[float, ...]
    warmup: int

    @property
    def cpu_best(self) -> float:
        return min(self.cpu_times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_s": self.best, "median_s": self.median, "cpu_best_s": self.cpu_best,
            "cpu_median_s": self.cpu_median, "times_s": list(self.times), "cpu_times_s": list(self.cpu_times),
            "warmup": self.warmup, "repeats": len(self.times),
        }


def _sync() -> None:
    """Wait for queued CUDA work, so that a call's time includes its kernels (a no-op without CUDA)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and process CPU seconds of one call of ``fn``, with the garbage collector run before and off
    during, and CUDA synchronised before and after (GPU kernels run asynchronously)."""
    gc.collect()
    _sync()
    gc.disable()
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        _sync()
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        gc.enable()


def _timing(samples: list[tuple[float, float]], warmup: int) -> Timing:
    walls = tuple(w for w, _ in samples)
    cpus = tuple(c for _, c in samples)
    return Timing(best=min(walls), median=statistics.median(walls), times=walls, cpu_times=cpus, warmup=warmup)


def best_of(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then the best and median of ``repeats`` timed calls.

    The garbage collector is run before, and disabled during, each timed call so that a
    collection triggered by one contender is not billed to the next.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        fn()
    return _timing([_timed(fn) for _ in range(repeats)], warmup)


def best_of_interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, Timing]:
    """Like :func:`best_of` for several contenders, timed round-robin.

    Each round calls every contender once, in order, so a slow drift of the machine (another
    process starting, thermal throttling) is shared by all contenders instead of landing on
    whichever happened to be timed last.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_timed(fn))
    return {name: _timing(s, warmup) for name, s in samples.items()}


def paired_ratio(num: Timing, den: Timing, cpu: bool = False) -> float:
    """Median over rounds of ``num / den`` timed in the same round (round-robin timing only)."""
    a, b = (num.cpu_times, den.cpu_times) if cpu else (num.times, den.times)
    return statistics.median(x / y for x, y in zip(a, b))


# --------------------------------------------------------------------------- models and data


def cifar_cnn(seed: int = 0, num_classes: int = 10) -> nn.Module:
    """A small CNN for 3x32x32 inputs (3 conv layers + linear) with fixed-seed random weights, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16x16x16
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32x8x8
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32x4x4
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, num_classes),
    )
    return model.eval()


def cifar_batch(n: int = 256, seed: int = 0, num_classes: int = 10) -> tuple[Tensor, Tensor]:
    """``n`` CIFAR-shaped inputs uniform in [0, 1] and seeded labels."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, 32, 32), generator=gen)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return x, y


class DigitsCNN(nn.Module):
    """A small CNN for the 1x8x8 scikit-learn digits (two conv blocks + linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 32x4x4
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 64x2x2
            nn.Flatten(),
        )
        self.head = nn.Linear(64 * 2 * 2, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def digits_split(seed: int = 0, n_train: int = 1400) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: the scikit-learn digits in [0, 1], shape (N, 1, 8, 8), seeded split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    x, y = x[perm], y[perm]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def train_digits_cnn(seed: int = 0, epochs: int = 20, batch_size: int = 64, lr: float = 3e-3) -> nn.Module:
    """A :class:`DigitsCNN` trained with Adam on the digits training split (seeded; a few seconds on a CPU)."""
    x_train, y_train, _, _ = digits_split()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y_train), generator=gen)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
    return model.eval()


# --------------------------------------------------------------------------- provenance


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device | str = "cpu", peers: Sequence[str] = ()) -> dict[str, Any]:
    """Where and with what a benchmark ran: CPU model, cores, threads, device and versions."""
    device = torch.device(device)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "robustness-harness": _package_version("robustness-harness"),
    }
    for name in peers:
        versions[name] = _package_version(name)
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "platform": platform.platform(),
        "versions": versions,
        "git": git_state(),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def git_state(root: str | Path | None = None) -> dict[str, Any]:
    """The commit the library code was at, and the library files (``attacks``, ``robustness``,
    ``defenses``) that differ from it, so that a result can be tied to the code that produced it."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    state: dict[str, Any] = {"commit": None, "uncommitted_library_changes": None}
    try:
        state["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        porcelain = subprocess.run(
            ["git", "status", "--porcelain", "--", "attacks", "robustness", "defenses"],
            cwd=root, capture_output=True, text=True, check=True, timeout=30,
        ).stdout
        state["uncommitted_library_changes"] = [line[3:] for line in porcelain.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    return state


def command_line() -> str:
    """The command that started this process, shell-quoted, as run from the repository root."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def now_utc() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- writers


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n")
    return path


def write_markdown(path: str | Path, text: str) -> Path:
    """Write ``text`` (ending with a newline) to ``path`` atomically."""
    path = Path(path)
    atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return path


def save_results(out_dir: str | Path, stem: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``result`` to ``OUT/STEM.json`` and ``markdown`` to ``OUT/STEM.md`` (atomically, creating
    ``out_dir``) and say where on stdout; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_json(out_dir / f"{stem}.json", result), write_markdown(out_dir / f"{stem}.md", markdown)
    print(f"wrote {paths[0]} and {paths[1]}")
    return paths


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column, ``l`` or ``r`` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def busy_machine_note(info: dict[str, Any]) -> list[str]:
    """A Markdown warning line when the load average at start exceeded the usable cores, else nothing."""
    load, cores = info.get("load_average_1m_at_start"), info.get("usable_cores") or 0
    if load is None or not cores or load <= cores:
        return []
    return [(f"- **busy machine**: load average {load:.2f} on {cores} usable cores at start; multi-threaded wall "
            f"times are disturbed, trust the 1-thread cross-check and the CPU-time ratios more")]


def provenance_lines(info: dict[str, Any], command: str, date: str) -> list[str]:
    """Markdown bullet lines recording the command, date, machine and versions."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None)
    git = info.get("git", {})
    changes = git.get("uncommitted_library_changes")
    return [
        f"- command: `{command}` (from the repository root)",
        f"- date: {date}",
        f"- CPU: {info['cpu_model']} ({info['usable_cores']} usable of {info['logical_cores']} logical cores)",
        f"- device: {info['device']}, torch threads: {info['torch_threads']}",
        f"- versions: {versions}",
        *busy_machine_note(info),
        f"- code: commit {git.get('commit') or 'unknown'}"
        + (f", with uncommitted changes to {', '.join(changes)}" if changes else "")
        + (", no uncommitted library changes" if changes == [] else ""),
    ]
