"""Published numbers beside ours: a model's claimed clean and robust accuracy against what this run measured.

A model source that publishes figures (RobustBench's leaderboard: AutoAttack accuracy at one budget, or the
accuracy under common corruptions) puts them in :attr:`robustness.model_info.ModelInfo.claims`.
:func:`published_comparison` sets them beside a report's numbers: the difference in percentage points and
the 95% binomial interval (Wilson's) of *our* measurement for the examples we used, which says whether the
difference is within sampling noise. Two differences are warned about, loudly, because they point to a
wrong result rather than to noise:

* our clean accuracy lies below the published one beyond noise: wrong normalization or preprocessing, or
  different data;
* our robust accuracy lies *above* the published one beyond noise: a weaker attack than the
  leaderboard's (AutoAttack standard) or a different subset; such a number must not be quoted as the
  model's robustness.

:func:`attach` fills :attr:`robustness.report.Report.published` and adds those warnings to the report (the
CLI calls it for every model that has claims; :meth:`robustness.report.Report.set_published` is the same
for Python users). :func:`published_markdown` is report.md's "Published vs measured" table.

Example::

    claims = {"source": "RobustBench leaderboard", "metric": "autoattack_acc", "clean_accuracy": 0.8969,
              "robust_accuracy": 0.5953, "norm": "linf", "eps": 8 / 255}
    block = published_comparison(claims, clean_accuracy=0.88, robust_accuracy={0.0: 0.88, 8 / 255: 0.57},
                                 norm="linf", epsilons=[0.0, 8 / 255], n_examples=1000)
    block["robust"]["difference"]     # -2.53 (percentage points, ours minus published)
    block["robust"]["within_noise"]   # True: 59.53% lies in our 95% interval [53.9%, 60.0%]
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from robustness.errors import RobustnessWarning

if TYPE_CHECKING:
    from robustness.report import Report

__all__ = ["CLEAN_BELOW", "ROBUST_ABOVE", "Z_95", "attach", "budget_text", "published_comparison",
           "published_markdown", "wilson_interval"]

#: the normal quantile of a two-sided 95% interval
Z_95 = 1.959963984540054
#: budgets equal within this relative tolerance are the same budget
REL_TOL = 1e-6
#: what the two warnings say about the likely cause
CLEAN_BELOW = "wrong normalization or preprocessing? different data?"
ROBUST_ABOVE = "a weaker attack than the leaderboard's, or a different subset: do not quote it"
_METRICS = {"autoattack_acc": "robust accuracy: AutoAttack's, or a stronger evaluation's where the leaderboard knows one", "corruptions_acc": "accuracy under common corruptions"}


def wilson_interval(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``p`` measured on ``n`` examples (95% by default);
    ``(0.0, 1.0)`` for ``n == 0`` or NaN (nothing is known)."""
    if n <= 0 or p is None or math.isnan(p):
        return 0.0, 1.0
    p = min(max(float(p), 0.0), 1.0)
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 (p = 1) the bound is 0 (1) exactly; the formula leaves a rounding error there
    return (0.0 if p == 0 else max(0.0, center - half)), (1.0 if p == 1 else min(1.0, center + half))


def budget_text(eps: float) -> str:
    """A budget as people write it: ``8/255`` for ``0.0313725``, ``0.5`` for ``0.5``, ``0.3`` for ``0.3``
    (a fraction of 255 only where the decimal is not short)."""
    short = f"{eps:.6g}"
    steps = eps * 255
    if len(short) > 5 and 0 < eps < 1 and abs(steps - round(steps)) < 1e-6 * max(1.0, steps):
        return f"{round(steps)}/255"
    return short


def _same_budget(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0) or a == b


def _finite(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _pts(value: float) -> float:
    return round(100 * value, 4)


def _pair(claimed: float | None, measured: float | None, n: int) -> dict[str, Any]:
    """One claimed/measured pair: the difference in points, our 95% interval, whether the claim lies in it."""
    out: dict[str, Any] = {"claimed": claimed, "measured": measured, "difference": None, "interval": None,
                           "within_noise": None}
    if measured is not None:
        out["interval"] = list(wilson_interval(measured, n))
    if claimed is not None and measured is not None:
        out["difference"] = _pts(measured - claimed)
        out["within_noise"] = out["interval"][0] <= claimed <= out["interval"][1]
    return out


def _robust_measured(claims: Mapping[str, Any], robust_accuracy: Mapping[float, float], norm: str,
                     epsilons: Iterable[float], corruptions_accuracy: float | None
                     ) -> tuple[float | None, float | None, str | None]:
    """``(measured, eps, reason)``: our figure that corresponds to the claimed robust accuracy, or why none does."""
    metric = claims.get("metric") or "autoattack_acc"
    if metric == "corruptions_acc":
        if corruptions_accuracy is None:
            return None, None, ("the published figure is the accuracy under common corruptions: evaluate with "
                                "--threat-model corruptions to measure it")
        return _finite(corruptions_accuracy), None, None
    claimed_norm = str(claims.get("norm") or "").lower() or None
    eps = _finite(claims.get("eps"))
    if eps is None:
        return None, None, "the published budget is not known, so no measured budget can be matched to it"
    text = budget_text(eps)
    if claimed_norm is not None and claimed_norm != norm.lower():
        return None, eps, (f"the published robust accuracy is for {claimed_norm} {text} and this run is {norm}: "
                           f"run with --norm {claimed_norm} --eps {text}")
    measured = [e for e in [*robust_accuracy, *epsilons] if _same_budget(float(e), eps)]
    hit = next((e for e in measured if e in robust_accuracy), None)
    if hit is None:
        return None, eps, f"no budget {text} in this run: add --eps {text}"
    return _finite(robust_accuracy[hit]), float(hit), None


def published_comparison(claims: Mapping[str, Any] | None, *, clean_accuracy: float,
                         robust_accuracy: Mapping[float, float], norm: str, epsilons: Iterable[float],
                         n_examples: int, corruptions_accuracy: float | None = None,
                         data: str | None = None) -> dict[str, Any] | None:
    """The published numbers in ``claims`` beside ours; ``None`` without claims.

    Args:
        claims: :attr:`robustness.model_info.ModelInfo.claims` (``source``, ``metric``, ``clean_accuracy``,
            ``robust_accuracy``, ``norm``, ``eps``; fractions, ``None`` where not published).
        clean_accuracy: ours, a fraction.
        robust_accuracy: ours per budget (``Report.robust_accuracy``); the claimed budget is looked up among
            them (same norm, equal within a relative 1e-6).
        norm: the norm of this run.
        epsilons: the budgets this run listed.
        n_examples: how many examples our fractions count (the interval's ``n``).
        corruptions_accuracy: our mean accuracy under common corruptions, for a ``corruptions_acc`` claim.
        data: what this run measured (the report's data line); when the claims name their dataset
            (``claims["dataset"]``: ``cifar10``, ``imagenet``...) and this is other data, the figures are set
            side by side but marked not comparable (``"comparable": False``), with one warning instead of the
            noise warnings, which would compare different images.

    Returns:
        ``{"source", "metric", "clean": {...}, "robust": {...}, "n_examples", "note", "warnings"}``;
        ``clean`` and ``robust`` hold ``claimed`` and ``measured`` (fractions, ``None`` where unknown),
        ``difference`` (ours minus published, in percentage points), ``interval`` (our 95% Wilson interval)
        and ``within_noise`` (the published value lies in it); ``robust`` also ``eps`` (the budget compared)
        and ``reason`` (why nothing was compared, else ``None``). ``warnings`` are the loud ones (see the
        module docstring): the caller puts them in the report's warnings.
    """
    if not claims:
        return None
    n = int(n_examples)
    clean = _pair(_finite(claims.get("clean_accuracy")), _finite(clean_accuracy), n)
    measured, eps, reason = _robust_measured(claims, robust_accuracy, norm, epsilons, corruptions_accuracy)
    claimed_robust = _finite(claims.get("robust_accuracy"))
    if claimed_robust is None and reason is None:
        reason = "the source publishes no robust accuracy for this model"
    robust = {**_pair(claimed_robust, measured, n), "eps": eps, "reason": reason}
    source = str(claims.get("source") or "published")
    found: list[str] = []
    comparable = same_dataset(claims.get("dataset"), data)
    if comparable is False:
        found.append(f"the published figures ({source}) are on {claims['dataset']} and this run measured {data}: "
                     "the differences compare different images, not the model's published robustness")
        return {"source": source, "metric": claims.get("metric"), "clean": clean, "robust": robust, "n_examples": n,
                "comparable": False, "note": _note(clean, robust, n), "warnings": found}
    if clean["within_noise"] is False and clean["measured"] < clean["claimed"]:
        lo, hi = clean["interval"]
        found.append(f"clean accuracy {_pct(clean['measured'])} is {-clean['difference']:.1f} points below the "
                     f"published {_pct(clean['claimed'])} ({source}), more than sampling noise allows on {n} examples "
                     f"(95% interval {_pct(lo)}-{_pct(hi)}): {CLEAN_BELOW}")
    if robust["within_noise"] is False and robust["measured"] > robust["claimed"]:
        lo, hi = robust["interval"]
        at = f" at {budget_text(eps)}" if eps is not None else ""
        found.append(f"robust accuracy{at} {_pct(robust['measured'])} is {robust['difference']:.1f} points ABOVE the "
                     f"published {_pct(robust['claimed'])} ({source}), beyond sampling noise on {n} examples (95% "
                     f"interval {_pct(lo)}-{_pct(hi)}): {ROBUST_ABOVE}")
    return {"source": source, "metric": claims.get("metric"), "clean": clean, "robust": robust, "n_examples": n,
            "comparable": comparable, "note": _note(clean, robust, n), "warnings": found}


def same_dataset(claimed: str | None, data: str | None) -> bool | None:
    """Whether the data line ``data`` (``"cifar10, test split"``, ``"imagenet val (...)"``, ``"cifar10-c"``) is the
    dataset ``claimed`` (``"cifar10"``); ``None`` when either is unknown."""
    if not claimed or not data:
        return None
    head = re.split(r"[\s,(]", str(data).strip().lower(), maxsplit=1)[0]
    key = head.removesuffix("-c").replace("-", "").replace("_", "")
    return key == str(claimed).lower().replace("-", "").replace("_", "")


def _note(clean: Mapping[str, Any], robust: Mapping[str, Any], n: int) -> str:
    parts = []
    for what, pair in (("clean", clean), ("robust", robust)):
        if pair["within_noise"] is True:
            parts.append(f"{what}: the difference is within sampling noise")
        elif pair["within_noise"] is False:
            parts.append(f"{what}: the difference is beyond sampling noise")
    return ("differences are ours minus the published, in percentage points; the 95% interval (Wilson) is that of "
            f"our measurement on {n} examples, the published figures come from the source's own evaluation (its "
            f"attack, its full test set)" + (f"; {'; '.join(parts)}" if parts else ""))


def attach(report: Report, claims: Mapping[str, Any] | None = None, *, stacklevel: int = 2) -> list[str]:
    """Fill ``report.published`` from ``claims`` (default: ``report.model.claims``) and add the loud warnings
    to ``report.warnings``, warning each (:class:`~robustness.errors.RobustnessWarning`); returns the new ones.

    Without claims, ``report.published`` becomes ``None``.
    """
    if claims is None and report.model is not None:
        claims = report.model.claims
    report.published = published_comparison(
        claims, clean_accuracy=report.clean_accuracy, robust_accuracy=report.robust_accuracy, norm=report.norm,
        epsilons=report.epsilons, n_examples=report.n_examples, data=report.data)
    new = [w for w in (report.published or {}).get("warnings", []) if w not in report.warnings]
    for message in new:
        warnings.warn(message, RobustnessWarning, stacklevel=stacklevel + 1)
    report.warnings.extend(new)
    return new


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _diff(pair: Mapping[str, Any]) -> str:
    if pair.get("difference") is None:
        return "-"
    noise = {True: " (within noise)", False: " (beyond noise)"}.get(pair.get("within_noise"), "")
    return f"{pair['difference']:+.1f} pts{noise}"


def _interval(pair: Mapping[str, Any]) -> str:
    iv = pair.get("interval")
    return f"{_pct(iv[0])}-{_pct(iv[1])}" if iv else "-"


def published_line(published: Mapping[str, Any] | None) -> str | None:
    """One line for the terminal: the published figures beside ours (``None`` without a published block)."""
    if not published:
        return None
    clean, robust = published["clean"], published["robust"]
    what = "corruption accuracy" if published.get("metric") == "corruptions_acc" else "robust"
    at = f" at {budget_text(robust['eps'])}" if robust.get("eps") is not None else ""
    if published.get("comparable") is False:
        return f"published ({published['source']}): not comparable, measured on other data"
    text = (f"published ({published['source']}): clean {_pct(clean['claimed'])}, ours {_pct(clean['measured'])} "
            f"[{_diff(clean)}]; {what}{at} {_pct(robust['claimed'])}, ")
    if robust.get("reason"):
        return text + f"not compared: {robust['reason']}"
    return text + f"ours {_pct(robust['measured'])} [{_diff(robust)}]"


def published_markdown(published: Mapping[str, Any] | None) -> list[str]:
    """report.md's "Published vs measured" section (no lines without a published block)."""
    if not published:
        return []
    clean, robust = published["clean"], published["robust"]
    metric = _METRICS.get(published.get("metric") or "", published.get("metric") or "robust accuracy")
    at = f" at eps {budget_text(robust['eps'])}" if robust.get("eps") is not None else ""
    label = "mean accuracy under corruptions" if published.get("metric") == "corruptions_acc" else "robust accuracy"
    lines = ["## Published vs measured", "", f"Source: {published['source']} ({metric}).", "",
             "| | published | ours | difference | our 95% interval |", "|---|---:|---:|---:|---:|",
             f"| clean accuracy | {_pct(clean['claimed'])} | {_pct(clean['measured'])} | {_diff(clean)} | "
             f"{_interval(clean)} |",
             f"| {label}{at} | {_pct(robust['claimed'])} | {_pct(robust['measured'])} | {_diff(robust)} | "
             f"{_interval(robust)} |", ""]
    if published.get("comparable") is False:
        lines += ["**Not comparable**: the published figures are on other data than this run measured.", ""]
    if robust.get("reason"):
        lines += [f"{label.capitalize()} not compared: {robust['reason']}.", ""]
    return lines + [f"({published['note']}.)", ""]
