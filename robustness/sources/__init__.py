"""Model sources with a prefix: ``robustbench:NAME``, ``timm:NAME``, ``torchvision:NAME``.

Each source loads a *trained* model the way its own library does (RobustBench's model zoo, timm's
pretrained weights from its cache or hub, torchvision's weights API), puts the normalization its
weights declare inside the model (:class:`robustness.model.NormalizedModel`: inputs stay in pixel
space ``[0, 1]``) and returns a :class:`robustness.loading.LoadedModel` that says what was loaded:
source, name, threat model, the SHA-256 of the weights, the preprocessing geometry the weights
declare (:class:`robustness.input_transform.InputTransform`) and, where the source publishes them,
its claimed accuracies (:attr:`robustness.model_info.ModelInfo.claims`).

:func:`robustness.loading.load_model` dispatches here on the prefix; the CLI's ``--model`` and
``robustness.load_model`` call that. A file that is not in the cache and cannot be downloaded (no
network) is one :class:`~robustness.errors.InputError` line that says where the file was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch

from robustness.errors import InputError

if TYPE_CHECKING:
    from robustness.loading import LoadedModel

__all__ = ["PREFIXES", "SourceOptions", "load_from_source", "source_prefix"]

#: the prefixes this package reads, in the order they are documented
PREFIXES = ("robustbench", "timm", "torchvision")

MapLocation = Union[str, torch.device, None]


@dataclass(frozen=True)
class SourceOptions:
    """What a source may need besides the name (``None``: the source's default).

    Attributes:
        dataset: ``cifar10``, ``cifar100`` or ``imagenet`` (RobustBench; default ``cifar10``).
        threat_model: ``Linf``, ``L2`` or ``corruptions`` (RobustBench; default from ``norm``).
        norm: the evaluation's norm (``linf``/``l2``), the default threat model.
        model_dir: where RobustBench keeps its model files (default RobustBench's own ``./models``).
        weights: torchvision's weights name (``DEFAULT``, ``IMAGENET1K_V1``) or ``none`` (untrained).
        num_classes, in_channels: what the data needs, for checks.
        model_info_dir: a RobustBench ``model_info`` directory (its repository's
            ``model_info/<dataset>/<threat model>/<NAME>.json``), whose figures are preferred over the
            leaderboard tables of the installed robustbench's README (newer entries, footnotes).
    """

    dataset: str | None = None
    threat_model: str | None = None
    norm: str | None = None
    model_dir: Path | None = None
    weights: str | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    model_info_dir: Path | None = None


def source_prefix(spec: str) -> str | None:
    """The source prefix of ``spec`` (``"timm"`` for ``"timm:resnet50"``), lower-cased; ``None`` for none."""
    head, colon, _ = spec.strip().partition(":")
    return head.lower() if colon and head.lower() in PREFIXES else None


def load_from_source(spec: str, options: SourceOptions, map_location: MapLocation = "cpu") -> LoadedModel:
    """Load ``PREFIX:NAME`` through its source (see the module docstring)."""
    prefix = source_prefix(spec)
    name = spec.strip().partition(":")[2].strip()
    if prefix is None:
        raise InputError(f"{spec!r} has no model source prefix: use one of {', '.join(p + ':NAME' for p in PREFIXES)}")
    if not name:
        raise InputError(f"{spec!r} names no model: write {prefix}:NAME")
    if prefix == "robustbench":
        from robustness.sources.robustbench import load_robustbench

        return load_robustbench(name, options, map_location)
    if prefix == "timm":
        from robustness.sources.timm_models import load_timm

        return load_timm(name, options, map_location)
    from robustness.sources.torchvision_models import load_torchvision

    return load_torchvision(name, options, map_location)
