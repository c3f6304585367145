"""What a report says about the model it measured: which weights, which normalization, trained or not.

:class:`ModelInfo` is the ``"model"`` block of ``report.json`` (and the model lines of
``report.md``)::

    "model": {"source": "model.pt", "arch": "small-cnn", "dataset": "digits", "input_shape": [1, 8, 8],
              "weights_sha256": "3f1c...", "initial_weights": false,
              "weights": "robustness checkpoint (recorded SHA-256 verified)",
              "normalization": {"mean": [0.305], "std": [0.376]},
              "integrity": "zip CRC-32 of every member verified"}

:func:`describe_model` fills what the model object itself tells, for any ``evaluate()`` call: the
SHA-256 of its weights (:func:`robustness.integrity.weights_sha256`, without the outermost
:class:`~robustness.model.NormalizedModel`'s statistics, which are ``normalization``), and whether it
still has its initial random weights, which is detectable in general only through BatchNorm: a
network trained in train mode has updated its BatchNorm running statistics, a freshly built one
still holds their initial values (mean 0, variance 1, no batch tracked). A network without
BatchNorm that was never trained cannot be told from a trained one by its weights;
:func:`robustness.loading.load_model` knows more about the models it builds (``torchvision:NAME``
with ``weights="none"``, factories whose weights change with the random seed) and records it.

Example::

    info = describe_model(model)
    info.weights_sha256, info.normalization, info.initial_weights     # ('3f1c...', None, None)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from robustness.errors import RobustnessWarning

# torch is imported where a model is described, not with this module: reports (which hold a
# ModelInfo) load without it
if TYPE_CHECKING:
    from torch import nn

__all__ = ["BATCHNORM_UNTOUCHED", "INFO_ATTRIBUTE", "ModelInfo", "describe_model", "initial_weights_warning", "transform_text",
           "untouched_batchnorm", "warn_if_initial"]

#: the attribute under which :func:`robustness.load_model` leaves the loader's description on the module it
#: returns, so that ``evaluate(model, ...)`` reports where the model came from (source, name, claims)
INFO_ATTRIBUTE = "robustness_model_info"

#: why a network with BatchNorm is known to hold its initial random weights
BATCHNORM_UNTOUCHED = "every BatchNorm layer still holds its initial running statistics: it was never trained"


@dataclass
class ModelInfo:
    """The report's description of the evaluated model (``None`` where unknown).

    Attributes:
        source: where it was loaded from (a file, ``torchvision:NAME``, ``package.module:factory``);
            ``None`` for an in-memory model.
        arch: the architecture name, when known.
        dataset: the dataset it was trained on, when its checkpoint records it.
        input_shape: the ``(C, H, W)`` inputs it was trained on, when recorded.
        weights_sha256: :func:`robustness.integrity.weights_sha256` of the weights evaluated.
        initial_weights: ``True``: it holds the initial random weights of a freshly built network;
            ``False``: its weights were loaded from a file; ``None``: unknown.
        weights: where the weights come from, or why they are known to be initial.
        normalization: ``{"mean": [...], "std": [...]}`` applied inside the model by a
            :class:`~robustness.model.NormalizedModel`; ``None``: none (inputs reach the network as
            they are, unless its own ``forward`` normalizes them).
        integrity: how the file was verified (zip checksums), or why it could not be.
        name: the model's name in its source (``"Carmon2019Unlabeled"``, ``"resnet50.a1_in1k"``), for
            ``robustbench:``/``timm:``/``torchvision:`` models.
        threat_model: the threat model it was trained and ranked for (RobustBench: ``"Linf"``, ``"L2"``,
            ``"corruptions"``).
        input_transform: the preprocessing geometry its weights declare
            (:meth:`robustness.input_transform.InputTransform.to_dict`), applied to the data.
        claims: what its source publishes about it, set beside our numbers: ``{"source": ..., "metric":
            "autoattack_acc" | "corruptions_acc", "clean_accuracy": 0.8969, "robust_accuracy": 0.5953,
            "norm": "linf", "eps": 0.0313725, "dataset": "cifar10"}`` (fractions; ``None`` where not published;
            ``dataset``: the data the figures are on, when the source says).
    """

    source: str | None = None
    arch: str | None = None
    dataset: str | None = None
    input_shape: list[int] | None = None
    weights_sha256: str | None = None
    initial_weights: bool | None = None
    weights: str | None = None
    normalization: dict[str, list[float]] | None = None
    integrity: str | None = None
    name: str | None = None
    threat_model: str | None = None
    input_transform: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """``source``, or ``"in-memory model"``."""
        return self.source or "in-memory model"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str | None) -> ModelInfo | None:
        """Read :meth:`to_dict` output; an older report's ``"model"`` (the source as a string) too."""
        if data is None:
            return None
        if isinstance(data, str):
            return cls(source=data)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def markdown_lines(self) -> list[str]:
        """The report.md lines that describe the model."""
        arch = self.arch if self.arch != self.source else None
        about = ", ".join(x for x in (arch, f"trained on {self.dataset}" if self.dataset else None,
                                      f"inputs {'x'.join(map(str, self.input_shape))}" if self.input_shape else None)
                          if x)
        weights = f"SHA-256 {self.weights_sha256}" if self.weights_sha256 else "SHA-256 not recorded"
        weights += "".join(f"; {x}" for x in (self.weights, self.integrity) if x)
        initial = {True: "**yes**: its numbers say nothing about a trained network", False: "no",
                   None: "unknown"}[self.initial_weights]
        if self.normalization:
            norm = f"mean {self.normalization['mean']}, std {self.normalization['std']} (inside the model)"
        else:
            norm = "none (no NormalizedModel: inputs reach the network as they are)"
        lines = [f"- model: {self.label}{f' ({about})' if about else ''}"]
        if self.name or self.threat_model:  # models from a source (robustbench:, timm:, torchvision:) only
            lines.append("- " + ", ".join(x for x in (f"name: {self.name}" if self.name else None,
                                                      f"threat model: {self.threat_model}" if self.threat_model
                                                      else None) if x))
        if self.input_transform:
            lines.append(f"- input transform: {transform_text(self.input_transform)} (applied to the data)")
        return lines + [f"- weights: {weights}", f"- initial random weights: {initial}", f"- normalization: {norm}"]


def transform_text(transform: Mapping[str, Any]) -> str:
    """An input transform (:meth:`robustness.input_transform.InputTransform.to_dict`) as report.md says it:
    ``resize 256 / crop 224 bilinear`` (``crop 224x192`` for a crop that is not square)."""
    from robustness.errors import InputError
    from robustness.input_transform import InputTransform

    try:
        return InputTransform.from_dict(transform).describe()
    except (InputError, KeyError, TypeError, ValueError):  # a damaged report: say what it holds
        return f"unreadable input transform {dict(transform)}"


def untouched_batchnorm(model: nn.Module) -> bool:
    """True when ``model`` has BatchNorm layers with running statistics and every one still holds
    their initial values (running mean 0, running variance 1, no batch tracked): it never ran a
    training step in train mode."""
    import torch
    from torch import nn

    batchnorms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # and their lazy variants
    layers = [m for m in model.modules() if isinstance(m, batchnorms)
              and m.running_mean is not None and m.running_var is not None]
    if not layers:
        return False
    with torch.no_grad():
        return all((m.num_batches_tracked is None or int(m.num_batches_tracked) == 0)
                   and bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all()) for m in layers)


def initial_weights_warning(reason: str) -> str:
    """The warning for a model that holds its initial random weights, ``reason`` saying how that is known."""
    return (f"the model has its initial random weights ({reason}): its accuracy and robustness say nothing about "
            "a trained network; evaluate trained weights (a checkpoint, or a state dict with --arch / arch=)")


def warn_if_initial(info: ModelInfo, stacklevel: int = 3) -> list[str]:
    """Warn (:class:`~robustness.errors.RobustnessWarning`) when ``info`` says the model holds its
    initial random weights; returns the warnings given (none or one), for the report."""
    if not info.initial_weights:
        return []
    message = initial_weights_warning(info.weights or "it was built and never loaded")
    warnings.warn(message, RobustnessWarning, stacklevel=stacklevel)
    return [message]


def describe_model(model: nn.Module) -> ModelInfo:
    """What ``model`` itself tells about its weights: their SHA-256, its normalization and, through
    BatchNorm, whether it was ever trained (see the module docstring).

    A model from :func:`robustness.load_model` carries the loader's description (:data:`INFO_ATTRIBUTE`):
    it is returned whole (source, name, threat model, claims...) while the weights and normalization are
    still those loaded; once they changed, only the source is kept, with a note, and no claims.

    The hash covers the network inside ``model`` when ``model`` is a :class:`NormalizedModel`
    (whose mean and std are ``normalization``), else ``model``'s whole state dict; normalization
    is that of the first :class:`NormalizedModel` among ``model``'s modules.
    """
    from robustness.integrity import weights_sha256
    from robustness.model import NormalizedModel

    net = model.model if isinstance(model, NormalizedModel) else model
    wrapper = next((m for m in model.modules() if isinstance(m, NormalizedModel)), None)
    normalization = None
    if wrapper is not None:
        normalization = {"mean": [float(v) for v in wrapper.mean.tolist()],
                         "std": [float(v) for v in wrapper.std.tolist()]}
    untrained = untouched_batchnorm(model)
    seen = ModelInfo(weights_sha256=weights_sha256(net), normalization=normalization,
                     initial_weights=True if untrained else None, weights=BATCHNORM_UNTOUCHED if untrained else None)
    loaded = getattr(model, INFO_ATTRIBUTE, None)
    if not isinstance(loaded, ModelInfo):
        return seen
    # a NormalizedModel's statistics lie outside the weights' hash; a network normalizing in its own forward
    # (RobustBench's) holds them as buffers, which the hash covers, and has no wrapper to compare
    rewrapped = seen.normalization is not None and seen.normalization != loaded.normalization
    if loaded.weights_sha256 == seen.weights_sha256 and not rewrapped:
        return ModelInfo(**asdict(loaded))  # as loaded: the description applies
    # changed since it was loaded (fine-tuned, re-wrapped): say where it came from, not what its source claims
    changed = "weights" if loaded.weights_sha256 != seen.weights_sha256 else "normalization"
    note = (f"loaded from {loaded.source}, its {changed} changed since (loaded weights SHA-256 "
            f"{loaded.weights_sha256}): the source's description and claims do not apply")
    return ModelInfo(**{**asdict(seen), "source": loaded.source, "arch": loaded.arch, "dataset": loaded.dataset,
                        "weights": f"{note}; {seen.weights}" if seen.weights else note})
