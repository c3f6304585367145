"""``robustness evaluate|train --nproc K``: the same command in K processes, through ``torchrun``.

:func:`relaunch` runs, in a subprocess, ``torch.distributed.run`` (torchrun) with ``--standalone
--nproc_per_node K -m robustness -- <the command line without --nproc>`` and waits for it. Each
process gets ``OMP_NUM_THREADS = cores // K`` (at least 1) unless the variable is set already, so
that K processes do not each start a thread per core.

The subprocess is ``python -m robustness.cli.launch ARGS``, which calls ``torch.distributed.run.main(ARGS)``
(exactly what ``python -m torch.distributed.run ARGS`` does) but ends a failed run quietly:
torchrun still kills every other rank as soon as one fails (a rank blocked in a collective
never hangs), without printing its ``ChildFailedError`` traceback and summary after the rank's
own one-line error.

Exit codes. torchrun exits 1 whenever a rank fails. To keep the CLI's codes (0 ok, 1 gate failed,
2 input error), each rank records its exit code and error message in a directory the launcher
names (:data:`LAUNCH_DIR_ENV`, :func:`record_exit`); the launcher returns 2 if any rank had an
input error (printing each distinct message once, as the last lines), else rank 0's code (and
rank 0's error message, if it had one).

Example::

    robustness evaluate --nproc 4 --model model.pt --data cifar10 --out report/
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustness.errors import InputError

__all__ = ["LAUNCH_DIR_ENV", "record_exit", "relaunch", "strip_nproc", "threads_per_process"]

log = logging.getLogger(__name__)

#: set by :func:`relaunch` for its ranks: the directory where each rank records its exit code
LAUNCH_DIR_ENV = "ROBUSTNESS_LAUNCH_DIR"
_FLAG = "--nproc"


def threads_per_process(nproc: int) -> int:
    """CPU threads each of ``nproc`` processes gets: the cores this process may use, shared (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, nproc))


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc K`` / ``--nproc=K`` (and argparse's abbreviations down to ``--np``)."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        name, eq, _ = token.partition("=")
        if len(name) >= 4 and _FLAG.startswith(name):
            skip = not eq
            continue
        out.append(token)
    return out


def relaunch(argv: Sequence[str], nproc: int) -> int:
    """Run ``robustness <argv>`` (without ``--nproc``) in ``nproc`` processes through torchrun; the exit code.

    Raises :class:`InputError` for ``nproc < 1`` or when this process already runs under torchrun.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise InputError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ:
        raise InputError("--nproc launches torchrun itself: drop it when the command already runs under torchrun")
    args = strip_nproc(argv)
    cmd = [sys.executable, "-m", "robustness.cli.launch", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "robustness", "--", *args]  # "--": torchrun's parser must not see our options (--n)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    with tempfile.TemporaryDirectory(prefix="robustness-launch-") as tmp:
        env[LAUNCH_DIR_ENV] = tmp
        log.info("running %d processes (OMP_NUM_THREADS=%s): %s", nproc, env["OMP_NUM_THREADS"], shlex.join(cmd))
        proc = subprocess.Popen(cmd, env=env)
        try:
            returncode = proc.wait()
        except KeyboardInterrupt:  # the terminal interrupted torchrun and its ranks too: let them stop
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        outcomes = _read_outcomes(Path(tmp))
    return _exit_code(returncode, outcomes)


def record_exit(code: int, message: str | None = None) -> bool:
    """Record this rank's exit code (and error message) for the :func:`relaunch` that started it.

    Returns whether it was recorded: ``True`` only in a process started by ``--nproc``, whose
    launcher then prints ``message`` itself (once, however many ranks report it).
    """
    directory = os.environ.get(LAUNCH_DIR_ENV)
    rank = os.environ.get("RANK")
    if not directory or rank is None or not Path(directory).is_dir():
        return False
    from robustness.io import atomic_write_text

    try:
        atomic_write_text(Path(directory) / f"rank-{int(rank)}.json",
                          json.dumps({"rank": int(rank), "code": int(code), "message": message}))
    except (OSError, ValueError):
        return False
    return True


def _read_outcomes(directory: Path) -> dict[int, dict[str, Any]]:
    outcomes: dict[int, dict[str, Any]] = {}
    for path in directory.glob("rank-*.json"):
        try:
            data = json.loads(path.read_text())
            outcomes[int(data["rank"])] = data
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return outcomes


def _exit_code(returncode: int, outcomes: dict[int, dict[str, Any]]) -> int:
    """0/1/2/3 as one process would have exited: an input error on any rank, else rank 0's code; a
    rank that crashed without recording a code is an internal error (3), never the gate's 1."""
    errors = [outcomes[r] for r in sorted(outcomes) if outcomes[r]["code"] == 2]
    if errors:
        seen: list[str] = []
        for e in errors:
            if e.get("message") and e["message"] not in seen:
                seen.append(e["message"])
        for message in seen:
            sys.stderr.write(f"robustness: error: {message}\n")
        return 2
    if any(o["code"] == 130 for o in outcomes.values()):
        return 130
    if 0 in outcomes:
        code = int(outcomes[0]["code"])
        if outcomes[0].get("message"):
            sys.stderr.write(f"robustness: error: {outcomes[0]['message']}\n")
        return code if code != 0 or returncode == 0 else 3
    return 0 if returncode == 0 else 3


def _torchrun(argv: Sequence[str]) -> int:
    """``torch.distributed.run.main(argv)``; a failed rank makes it return 1 instead of raising.

    The ranks print their own errors and record their exit codes, so torchrun's traceback and
    failure summary would only repeat them; its warnings ("Sending process ... SIGTERM") are
    dropped too, its errors kept.
    """
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    try:
        run.main(list(argv))
    except ChildFailedError as e:
        codes = sorted({f.exitcode for f in e.failures.values()})
        log.debug("torchrun: ranks failed with exit codes %s", codes)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_torchrun(sys.argv[1:]))
