"""Compare two trees of saved reports for identical results, ignoring what differs run to run.

Used to show that a refactor changed no number: every ``report.json`` is compared field by
field (wall-clock timings and library versions left out), every ``samples.csv`` byte by byte,
and every ``report.md`` line by line without its timing lines.

Usage::

    python scripts/compare_reports.py BEFORE_DIR AFTER_DIR [--ignore model]

``--ignore KEY`` leaves a top-level report.json field out as well (repeatable); ``--ignore model``
also drops report.md's lines about the model (its path, weights, initial weights, normalization),
for comparisons across a change that only added to what a report records about the model.

Exit status 0 when every report under BEFORE_DIR has an identical twin under AFTER_DIR, else 1
with the differing fields listed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

IGNORED_JSON = {"timings", "versions", "model_seconds"}
TIMING_LINE = re.compile(r"^- time: |^\| \S+ \| [0-9.]+ \| \d+ \| \d+ \| \d+ \|$|^\| \S+ \| [0-9.]+ s")


def _diff(a: Any, b: Any, path: str, out: list[str], skip: frozenset[str] | set[str] = IGNORED_JSON) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key in skip and (key in IGNORED_JSON or path == ""):
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'after' if key in b else 'before'}")
                continue
            _diff(a[key], b[key], f"{path}.{key}", out, skip)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items before, {len(b)} after")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out, skip)
    elif isinstance(a, dict) and "seconds" in str(path):
        return
    elif a != b and not (a != a and b != b):  # NaN equals NaN here
        out.append(f"{path}: {a!r} before, {b!r} after")


MODEL_LINE = re.compile(r"^- (model|weights|initial random weights|normalization): ")


def compare(before: Path, after: Path, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Differences between the report trees ``before`` and ``after`` (empty when identical)."""
    problems: list[str] = []
    skip_json = IGNORED_JSON | ignore
    reports = sorted(before.rglob("report.json"))
    if not reports:
        return [f"no report.json under {before}"]
    for rep in reports:
        rel = rep.parent.relative_to(before)
        twin = after / rel
        if not (twin / "report.json").is_file():
            problems.append(f"{rel}: no report.json after")
            continue
        diffs: list[str] = []
        _diff(json.loads(rep.read_text()), json.loads((twin / "report.json").read_text()), "", diffs, skip_json)
        problems += [f"{rel}/report.json{d}" for d in diffs]
        for name in ("samples.csv",):
            if (rep.parent / name).is_file() and (rep.parent / name).read_bytes() != (twin / name).read_bytes():
                problems.append(f"{rel}/{name}: differs")
        def kept(line: str) -> bool:
            return not TIMING_LINE.search(line) and not ("model" in ignore and MODEL_LINE.search(line))

        md = [ln for ln in (rep.parent / "report.md").read_text().splitlines() if kept(ln)]
        md2 = [ln for ln in (twin / "report.md").read_text().splitlines() if kept(ln)]
        if md != md2:
            changed = [f"    - {x}\n    + {y}" for x, y in zip(md, md2) if x != y][:5]
            problems.append(f"{rel}/report.md: differs\n" + "\n".join(changed))
    return problems


def main(argv: list[str]) -> int:
    ignore = frozenset(argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ignore")
    dirs = [a for i, a in enumerate(argv) if a != "--ignore" and (i == 0 or argv[i - 1] != "--ignore")]
    if len(dirs) != 2:
        print(__doc__)
        return 2
    problems = compare(Path(dirs[0]), Path(dirs[1]), ignore)
    argv = dirs
    for p in problems:
        print(p)
    n = len(list(Path(argv[0]).rglob("report.json")))
    print(f"{n} reports compared: {'identical' if not problems else f'{len(problems)} differences'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
