"""What the RobustBench leaderboard claims for a model: its clean and robust (or corruption) accuracy.

Two sources, the first found wins:

* a RobustBench ``model_info`` JSON, when ``model_info_dir`` is given: the leaderboard repository's
  ``model_info/<dataset>/<threat_model>/<NAME>.json`` (``"clean_acc": "89.69"``, ``"autoattack_acc":
  "59.53"`` or ``"corruptions_acc"``, ``"eps": "8/255"``: percentages and fractions as strings);
* the leaderboard tables of the installed robustbench's README (its package metadata's description):
  sections ``### CIFAR-10`` / ``### CIFAR-100`` / ``### ImageNet``, subsections ``#### Linf, eps=8/255``,
  ``#### L2, eps=0.5``, ``#### Common Corruptions`` / ``#### Corruptions ...``, one row per model. The
  table's robust accuracy is the number RobustBench ranks by (AutoAttack's, or an external evaluation's
  where RobustBench lists one).

The claims are a dict (:attr:`robustness.model_info.ModelInfo.claims`), accuracies as fractions::

    {"source": "RobustBench leaderboard (robustbench 1.1.1 README)", "metric": "autoattack_acc",
     "clean_accuracy": 0.8969, "robust_accuracy": 0.5953, "norm": "linf", "eps": 0.03137254901960784}

The README is parsed once per process (:func:`functools.lru_cache`); JSON files are read each call.

Example::

    leaderboard_claims("Carmon2019Unlabeled", "cifar10", "Linf")["robust_accuracy"]     # 0.5953
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

from robustness.errors import InputError

__all__ = ["claims_from_model_info", "leaderboard_claims", "parse_leaderboard"]

log = logging.getLogger(__name__)

_DATASETS = {"cifar-10": "cifar10", "cifar-100": "cifar100", "imagenet": "imagenet"}
_TAGS = re.compile(r"</?(?:sub|sup|br)\s*/?>|\*+", re.IGNORECASE)
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_EPS = re.compile(r"eps\s*=\s*([0-9./]+)", re.IGNORECASE)
_NA = {"", "n/a", "na", "-", "none", "null", "?"}

#: the key of the accuracy a threat model is ranked by, and the norm it is measured in
_METRIC = {"Linf": ("autoattack_acc", "linf"), "L2": ("autoattack_acc", "l2"),
           "corruptions": ("corruptions_acc", None)}


def _number(text: Any, *, percent: bool) -> float | None:
    """``"89.69%"`` / ``"89.69"`` (percent) -> 0.8969; ``"8/255"`` -> 0.0313...; ``"N/A"``/None -> None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = Fraction(str(text))
    else:
        cleaned = str(text).strip().rstrip("%").strip()
        if cleaned.lower() in _NA:
            return None
        try:
            value = Fraction(cleaned)  # "8/255", "0.5", "89.69"
        except (ValueError, ZeroDivisionError):
            return None
    return float(value / 100) if percent else float(value)


def _cell(text: str) -> str:
    return _TAGS.sub("", _LINK.sub(r"\1", text)).strip()


def _threat_of(heading: str) -> tuple[str, float | None] | None:
    """``"Linf, eps=8/255"`` -> ``("Linf", 8/255)``; ``"Common Corruptions"`` -> ``("corruptions", None)``."""
    text = _cell(heading)
    low = text.lower()
    if "corruption" in low:
        return "corruptions", None
    eps_match = _EPS.search(text)
    eps = _number(eps_match.group(1), percent=False) if eps_match else None
    for threat in ("Linf", "L2"):
        if low.startswith(threat.lower()):
            return threat, eps
    return None


def parse_leaderboard(text: str, source: str) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """The claims of every row of RobustBench's README tables, by ``(dataset, threat_model)`` then model name.

    A model listed twice in one table keeps its first (best-ranked) row.
    """
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    dataset: str | None = None
    threat: tuple[str, float | None] | None = None
    columns: dict[str, int] | None = None
    fenced = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            title = line.lstrip("#").strip()
            if level <= 3:
                dataset = _DATASETS.get(_cell(title).lower()) if level == 3 else None
                threat, columns = None, None
            elif level == 4:
                threat, columns = (_threat_of(title) if dataset else None), None
            continue
        if not (line.startswith("|") and dataset and threat):
            continue
        cells = [_cell(c) for c in line.strip("|").split("|")]
        low = [c.lower() for c in cells]
        if "model id" in low:
            columns = {"name": low.index("model id"),
                       "clean": low.index("clean accuracy") if "clean accuracy" in low else -1,
                       "robust": low.index("robust accuracy") if "robust accuracy" in low else -1}
            continue
        if columns is None or set("".join(cells)) <= set(":- "):
            continue
        if len(cells) <= max(columns.values()):
            log.debug("leaderboard row with too few cells skipped: %s", line[:80])
            continue
        name = cells[columns["name"]]
        metric, norm = _METRIC[threat[0]]
        table = out.setdefault((dataset, threat[0]), {})
        table.setdefault(name, {
            "source": source, "metric": metric,
            "clean_accuracy": _number(cells[columns["clean"]], percent=True) if columns["clean"] >= 0 else None,
            "robust_accuracy": _number(cells[columns["robust"]], percent=True) if columns["robust"] >= 0 else None,
            "norm": norm, "eps": threat[1],
        })
    return out


@lru_cache(maxsize=1)
def _installed_leaderboard() -> tuple[str, dict[tuple[str, str], dict[str, dict[str, Any]]]]:
    """The installed robustbench's version and README tables (parsed once per process)."""
    from importlib import metadata

    try:
        meta = metadata.metadata("robustbench")
    except metadata.PackageNotFoundError:
        return "", {}
    version = meta.get("Version", "?")
    text = meta.get_payload() or meta.get("Description") or ""  # type: ignore[attr-defined]
    return version, parse_leaderboard(str(text), f"RobustBench leaderboard (robustbench {version} README)")


def claims_from_model_info(path: Path, threat_model: str) -> dict[str, Any]:
    """The claims of one RobustBench ``model_info`` JSON file (see the module docstring)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"RobustBench model info {path} is unreadable ({e}): fix or remove it") from e
    if not isinstance(data, Mapping):
        raise InputError(f"RobustBench model info {path} is not a JSON object: fix or remove it")
    metric, norm = _METRIC[threat_model]
    return {"source": f"RobustBench model info {path}", "metric": metric,
            "clean_accuracy": _number(data.get("clean_acc"), percent=True),
            "robust_accuracy": _number(data.get(metric), percent=True),
            "norm": norm, "eps": _number(data.get("eps"), percent=False) if norm else None}


def leaderboard_claims(name: str, dataset: str, threat_model: str,
                       model_info_dir: str | Path | None = None) -> dict[str, Any] | None:
    """What RobustBench claims for ``name`` on ``dataset`` (``cifar10``/``cifar100``/``imagenet``) under
    ``threat_model`` (``Linf``/``L2``/``corruptions``), or ``None`` where it publishes nothing.

    ``model_info_dir``: a directory laid out as the leaderboard's ``model_info/``; its
    ``<dataset>/<threat_model>/<name>.json``, when there, is preferred over the README table.
    """
    if threat_model not in _METRIC:
        return None
    if model_info_dir is not None:
        path = Path(model_info_dir) / dataset / threat_model / f"{name}.json"
        if path.is_file():
            return claims_from_model_info(path, threat_model)
        log.info("no RobustBench model info at %s: using the README's leaderboard table", path)
    _, tables = _installed_leaderboard()
    row = tables.get((dataset, threat_model), {}).get(name)
    return dict(row) if row is not None else None
