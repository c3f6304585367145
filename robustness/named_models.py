"""Public model names: ``robustness.load_model("digits-cnn")``, and the table of named sources behind them.

A *named source* maps the names it knows to a file the loader (:func:`robustness.loading.load_model`)
reads. Today there is one, the models shipped with the package (no prefix):

* ``digits-cnn``: a SmallCNN trained on the scikit-learn digits (8x8 grey images in [0, 1], 10 classes);
* ``digits-cnn-at``: the same network adversarially trained (``scripts/train_digits_cnn_at.sh``).

The model sources with a prefix (``robustbench:NAME``, ``timm:NAME``, ``torchvision:NAME``: whole zoos,
not listed here) are read by :mod:`robustness.sources` through the loader; :data:`SOURCE_FORMS` names
them in listings and errors. A file path that exists wins over a name, as it does over
``package.module:factory``.

Example::

    model = robustness.load_model("digits-cnn")      # nn.Module, eval mode, normalization inside
    report = robustness.evaluate(model, data, attacks=["pgd", "cw"], epsilons=["curve", 0, 0.5], norm="l2")
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustness.errors import InputError

__all__ = ["SHIPPED", "SOURCES", "SOURCE_FORMS", "NamedModel", "Source", "load_model", "model_names", "resolve"]

_WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class NamedModel:
    """One shipped model: its file and what it is."""

    path: Path
    description: str


#: the models shipped with the package, by public name
SHIPPED: Mapping[str, NamedModel] = {
    "digits-cnn": NamedModel(_WEIGHTS / "digits_cnn.pt",
                             "SmallCNN trained on the scikit-learn digits (1x8x8 inputs in [0, 1], 10 classes)"),
    "digits-cnn-at": NamedModel(_WEIGHTS / "digits_cnn_at.pt",
                                "the digits SmallCNN adversarially trained (scripts/train_digits_cnn_at.sh)"),
}


@dataclass(frozen=True)
class Source:
    """A naming scheme: ``prefix`` (``""``: bare names), the names it knows (for listings and errors), and
    how a name becomes a file the loader reads (``None``: not one of its names)."""

    prefix: str
    names: Callable[[], list[str]]
    resolve: Callable[[str], Path | None]


def _shipped(name: str) -> Path | None:
    entry = SHIPPED.get(name.strip().lower())
    return None if entry is None else entry.path


#: every named source, looked up in order
SOURCES: tuple[Source, ...] = (Source("", lambda: list(SHIPPED), _shipped),)

#: the model sources' forms (:mod:`robustness.sources`), for listings and not-found errors
SOURCE_FORMS = ("robustbench:NAME", "timm:NAME", "torchvision:NAME")


def model_names() -> list[str]:
    """Every name the sources know, prefixed where their source has a prefix."""
    return [f"{s.prefix}:{n}" if s.prefix else n for s in SOURCES for n in s.names()]


def resolve(spec: str) -> Path | None:
    """The file behind the model name ``spec`` (``None``: not a name any source knows). A name whose
    file is missing from the installation is an :class:`InputError` that says how to get it back."""
    head, colon, rest = spec.strip().partition(":")
    for source in SOURCES:
        if source.prefix and not (colon and head.lower() == source.prefix):
            continue
        if not source.prefix and colon:
            continue
        path = source.resolve(rest if source.prefix else spec)
        if path is None:
            continue
        if not path.is_file():
            raise InputError(f"the model {spec!r} ({path}) is missing from this installation: reinstall the package "
                             "(or recreate it with the scripts/ that made it)")
        return path
    return None


def unknown_name_hint(spec: str) -> str:
    """The model names, with the closest to ``spec`` first when there is one: for not-found errors."""
    names = model_names()
    close = difflib.get_close_matches(spec.strip().lower(), names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; model names: {', '.join(names)}; model sources: {', '.join(SOURCE_FORMS)}"


def load_model(name: str, *, device: str | torch.device = "cpu", dataset: str | None = None,
               threat_model: str | None = None, model_dir: str | Path | None = None,
               model_info_dir: str | Path | None = None, weights: str | None = None,
               norm: str | None = None) -> nn.Module:
    """The model called ``name``, ready to evaluate: an ``nn.Module`` in eval mode on ``device`` that takes
    pixel-space inputs (in ``[0, 1]``) and returns logits, its normalization inside.

    ``name`` is a model name (:func:`model_names`: ``"digits-cnn"``, ``"digits-cnn-at"``), a model source
    (``robustbench:NAME`` with ``dataset``/``threat_model``/``model_dir``/``model_info_dir``, ``timm:NAME``,
    ``torchvision:NAME`` with ``weights``: ``DEFAULT`` when not given, ``"none"`` untrained), or anything
    else :func:`robustness.loading.load_model` reads (a checkpoint, ``package.module:factory``); the
    keywords pass through to it. That function returns the model with what is known about it (its
    source, dataset, input shape and geometry, normalization, weights' SHA-256, published claims),
    which the CLI's ``--model`` uses; this one returns the network, carrying that description
    (:data:`robustness.model_info.INFO_ATTRIBUTE`) so that ``robustness.evaluate(model, ...)`` puts it in the
    report's model block (``report.set_published()`` then sets the source's claims beside the measured
    numbers). Unknown names are an :class:`InputError` listing the names.

    Example::

        model = robustness.load_model("digits-cnn-at")
        model(torch.rand(4, 1, 8, 8)).shape     # torch.Size([4, 10])
        model = robustness.load_model("robustbench:Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")
    """
    from robustness.loading import load_model as load
    from robustness.model_info import INFO_ATTRIBUTE

    loaded = load(name, map_location=device, dataset=dataset, threat_model=threat_model, model_dir=model_dir,
                  model_info_dir=model_info_dir, weights=weights, norm=norm)
    setattr(loaded.model, INFO_ATTRIBUTE, loaded.info)  # evaluate() reports where it came from (describe_model)
    return loaded.model
