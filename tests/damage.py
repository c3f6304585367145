"""Damaging a file the way crashes and bad copies do, for the tests of resumable state."""

from __future__ import annotations

from pathlib import Path

#: the kinds of damage :func:`damage_file` knows
KINDS = ("truncate", "garbage", "empty")


def damage_file(path: Path, kind: str) -> None:
    """Truncate ``path`` to half its size, overwrite it with bytes that are no archive, or empty it."""
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"unknown damage {kind!r}: use one of {', '.join(KINDS)}")
