"""An OS-level lock on a file, held for a run, that names its holder: one run per directory.

:func:`acquire` locks a file without waiting (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on
Windows) and writes who holds it into the file: pid, host, start time and command line. A second
process asking for the same lock gets an :class:`~robustness.errors.InputError` that names the
holder instead of waiting. The operating system releases the lock when its holder dies, even by
``kill -9``, so a lock file left behind is harmless: the next run takes it and writes itself in.
The file is never deleted (deleting a lock file lets two processes lock two different files of
the same name); releasing empties it.

``flock`` locks hold across processes on one machine, and on NFS where the kernel maps them to
NFS locks (Linux does); a directory shared over a file system without locks is not protected.

Example::

    lock = acquire(Path("run-state/robustness.lock"), what="the evaluation state run-state",
                   fix="wait for it to finish, or use another state directory")
    try:
        ...  # the run
    finally:
        lock.release()
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from robustness.errors import InputError

__all__ = ["FileLock", "Holder", "acquire"]

#: how long a refused process waits for the holder to write itself into the file (it locks first)
READ_HOLDER_SECONDS = 1.0
#: Windows locks bytes, and a locked byte cannot be read by others: lock one far beyond the holder's text
_WINDOWS_BYTE = 1 << 20
_COMMAND_CHARS = 200


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: process id, host name, start time (ISO 8601, local) and command line."""

    pid: int
    host: str
    since: str
    command: str

    @classmethod
    def this_process(cls) -> Holder:
        argv = list(sys.argv)
        if argv and Path(argv[0]).name == "__main__.py":  # python -m package
            argv[0] = f"python -m {Path(argv[0]).parent.name}"
        elif argv:
            argv[0] = Path(argv[0]).name
        command = " ".join([argv[0], shlex.join(argv[1:])]).strip() if argv else "python"
        if len(command) > _COMMAND_CHARS:
            command = command[:_COMMAND_CHARS - 3] + "..."
        return cls(pid=os.getpid(), host=socket.gethostname(),
                   since=datetime.now().astimezone().isoformat(timespec="seconds"), command=command)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} ({self.command})"


class FileLock:
    """A held lock (from :func:`acquire`); :meth:`release` (or the end of a ``with`` block) lets it go."""

    def __init__(self, path: Path, fd: int, holder: Holder) -> None:
        self.path = path
        self.holder = holder
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Empty the file and unlock it; a second call does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"FileLock({str(self.path)!r}, {'held' if self.held else 'released'})"


def acquire(path: Path, *, what: str, fix: str) -> FileLock:
    """Lock ``path`` (created if missing) for this process, or raise :class:`InputError` at once.

    The error reads ``"{what} is in use by pid N on HOST since T (COMMAND): {fix}"``.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _try_lock(fd)
    except BaseException:
        os.close(fd)
        raise
    if not locked:
        os.close(fd)
        raise InputError(f"{what} is in use by {_describe_holder(path)}: {fix}")
    holder = Holder.this_process()
    try:
        data = json.dumps(asdict(holder)).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
    except BaseException:
        FileLock(path, fd, holder).release()
        raise
    return FileLock(path, fd, holder)


def _describe_holder(path: Path) -> str:
    """The holder recorded in ``path``; it may be writing itself in right now, so look again for a moment."""
    deadline = time.monotonic() + READ_HOLDER_SECONDS
    while True:
        try:
            return str(Holder(**json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            if time.monotonic() > deadline:
                return f"another process (it has not written itself into {path})"
            time.sleep(0.02)


if sys.platform == "win32":  # pragma: no cover - not tested here
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
