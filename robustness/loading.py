"""Saving and loading models, safely: a self-describing checkpoint format and a loader.

A *robustness checkpoint* is a dict written with ``torch.save`` that holds only tensors
and plain Python values, so ``torch.load(..., weights_only=True)`` reads it without
unpickling arbitrary objects::

    {"format": "robustness-checkpoint", "version": 1,
     "arch": "small-cnn", "arch_kwargs": {"width": 16, ...},
     "state_dict": {...}, "weights_sha256": "3f1c...", "mean": [0.3], "std": [0.4],
     "dataset": "digits", "input_shape": [1, 8, 8], "bounds": [0.0, 1.0], "meta": {...}}

It records the architecture, the preprocessing and the inputs it was trained on, so
:func:`load_model` rebuilds a model ready for pixel-space inputs with no extra arguments,
and the SHA-256 of its weights (:func:`robustness.integrity.weights_sha256`), which loading
verifies.

:func:`load_model` also reads plain ``state_dict`` files (with ``arch=``, including
``torchvision:NAME`` and ``timm:NAME``), TorchScript archives, the model sources of
:mod:`robustness.sources` (``robustbench:NAME``, ``timm:NAME``, ``torchvision:NAME`` with pretrained
weights, ``DEFAULT`` unless ``weights=`` says otherwise) and ``package.module:factory``.

What is verified and recorded (:class:`LoadedModel`, the report's model block):

* every file: the CRC-32 of each member of a zip file (torch's format since 1.6, TorchScript;
  torch does not check them), before anything is read; legacy (non-zip) files carry no
  checksums and are read unverified (the report says so). Files are read with
  ``weights_only=True``: pickled Python objects are refused, never unpickled;
* our checkpoints: the recorded SHA-256 of the weights, and the recorded input shape against the
  data's (``input_shape=``);
* initial random weights: ``torchvision:NAME`` with ``weights="none"`` (built with ``weights=None``), a factory whose
  weights change with the random seed (it is called a second time, under a forked random state,
  to find out), and any network whose BatchNorm layers hold their initial statistics
  (:func:`robustness.model_info.untouched_batchnorm`) warn and are recorded as such. A network
  without BatchNorm that was never trained cannot be recognized by its weights;
* normalization: a plain state dict (or ``--arch torchvision:NAME`` / ``timm:NAME``) loaded without
  ``mean``/``std`` warns, since networks of known architectures are usually trained on
  normalized inputs (naming the statistics the architecture's pretrained weights declare); our
  checkpoints apply what they record; source models apply what their weights declare, and
  ``mean``/``std`` that differ from it replace it with a warning.

Example::

    save_checkpoint("model.pt", net, arch="small-cnn", arch_kwargs={"width": 16},
                    mean=data.mean, std=data.std, dataset="digits")
    loaded = load_model("model.pt")
    logits = loaded.model(x)          # x in [0, 1]; normalization happens inside
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from robustness.architectures import ARCHITECTURES, build_architecture
from robustness.datasets import standard_input_shape, standard_normalization
from robustness.errors import InputError, RobustnessWarning
from robustness.input_transform import InputTransform
from robustness.integrity import load_weights_only, verify_torch_file, weights_sha256
from robustness.io import atomic_open
from robustness.model import NormalizedModel
from robustness.named_models import SHIPPED, resolve, unknown_name_hint
from robustness.model_info import BATCHNORM_UNTOUCHED, ModelInfo, initial_weights_warning, untouched_batchnorm
from robustness.norms import check_bounds

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "DEFAULT_MODEL_PATH",
    "LoadedModel",
    "save_checkpoint",
    "load_model",
    "check_data_fits",
    "default_model",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "robustness-checkpoint"
CHECKPOINT_VERSION = 1

#: The shipped default model: a SmallCNN trained on the digits train split
#: (``scripts/train_digits_cnn.py``); public name ``digits-cnn`` (:mod:`robustness.named_models`).
DEFAULT_MODEL_PATH: Path = SHIPPED["digits-cnn"].path

MapLocation = Union[str, torch.device, None]

_FACTORY_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
# Keys under which training scripts commonly nest the weights of a checkpoint.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


@dataclass
class LoadedModel:
    """A model ready for pixel-space inputs, and where it came from.

    Attributes:
        model: the network in eval mode, wrapped in :class:`NormalizedModel` when the
            normalization statistics are known.
        arch: the architecture name (``"small-cnn"``, ``"torchvision:resnet18"``, ...), or
            ``None`` when unknown (TorchScript, ``package.module:factory``).
        source: the spec it was loaded from.
        dataset: the dataset it was trained on, when recorded.
        bounds: the input range it expects.
        mean, std: the normalization applied inside ``model`` (``None`` when none is).
        meta: free-form information recorded in the checkpoint (training command, accuracy...).
        input_shape: the ``(C, H, W)`` inputs it was trained on, when its checkpoint says.
        weights_sha256: :func:`robustness.integrity.weights_sha256` of the network's weights.
        initial_weights: ``True`` when it holds the initial random weights of a freshly built
            network, ``False`` when its weights were loaded from a file, ``None`` when unknown.
        weights: where the weights come from (and why they are known to be initial).
        integrity: how the file was verified, or why it could not be.
        warnings: the warnings given while loading it (initial weights, missing normalization).
        name: the model's name in its source (``robustbench:``/``timm:``/``torchvision:``).
        threat_model: the threat model it was ranked for (RobustBench).
        input_transform: the resize/center-crop its weights declare (applied to the data, e.g. ``imagenet``).
        claims: what its source publishes about it (:attr:`robustness.model_info.ModelInfo.claims`).
    """

    model: nn.Module
    arch: str | None
    source: str
    dataset: str | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    weights_sha256: str | None = None
    initial_weights: bool | None = None
    weights: str | None = None
    integrity: str | None = None
    warnings: list[str] = field(default_factory=list)
    name: str | None = None
    threat_model: str | None = None
    input_transform: InputTransform | None = None
    claims: dict[str, Any] | None = None

    @property
    def info(self) -> ModelInfo:
        """The report's model block for this model."""
        return ModelInfo(
            source=self.source, arch=self.arch, dataset=self.dataset,
            input_shape=list(self.input_shape) if self.input_shape is not None else None,
            weights_sha256=self.weights_sha256, initial_weights=self.initial_weights, weights=self.weights,
            normalization={"mean": list(self.mean), "std": list(self.std)} if self.mean is not None else None,
            integrity=self.integrity, name=self.name, threat_model=self.threat_model,
            input_transform=self.input_transform.to_dict() if self.input_transform is not None else None,
            claims=dict(self.claims) if self.claims is not None else None,
        )


# ----------------------------------------------------------------------------- saving


def _check_plain(value: Any, where: str) -> Any:
    """Return ``value`` as tensors and plain Python types only (tuples become lists)."""
    if value is None:
        return None
    # subclasses (numpy scalars, torch's TorchVersion, IntEnum...) become the plain type,
    # which is all torch.load(weights_only=True) accepts
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return [_check_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where} keys must be strings, got {k!r}")
            out[k] = _check_plain(v, f"{where}[{k!r}]")
        return out
    raise InputError(
        f"{where} holds a value of type {type(value).__name__}; checkpoints may only hold tensors, numbers, strings, "
        "None, lists and dicts (so they can be read with torch.load(weights_only=True))"
    )


def _stats(value: Sequence[float] | Tensor | None, name: str) -> list[float] | None:
    if value is None:
        return None
    try:
        out = [float(v) for v in (value.tolist() if isinstance(value, Tensor) else value)]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a sequence of numbers, one per channel, got {value!r}") from None
    if not out:
        raise InputError(f"{name} must not be empty")
    return out


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dataset: str | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    meta: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
) -> None:
    """Write ``model`` as a robustness checkpoint at ``path``, atomically.

    ``model`` is the bare architecture (normalization is recorded as ``mean``/``std``); a
    :class:`NormalizedModel` is unwrapped and its statistics used. The file is first
    written to a temporary file in the same directory, flushed and fsynced, then renamed
    over ``path``, so readers never see a half-written checkpoint. Before writing, the
    state dict is checked to load into ``build_architecture(arch, **arch_kwargs)``.

    The checkpoint records the SHA-256 of the weights (:func:`load_model` verifies it) and
    ``input_shape``, the ``(C, H, W)`` inputs the model was trained on (default: from
    ``arch_kwargs``' ``in_channels`` and ``input_size``, else the shape of the named ``dataset``);
    :func:`load_model` refuses data of another shape.

    Raises :class:`InputError` for an unknown ``arch``, a state dict that does not match
    it, mismatched ``mean``/``std``, or values that are not tensors or plain Python types.

    Example::

        save_checkpoint("cnn.pt", net, arch="small-cnn", arch_kwargs={"width": 16},
                        mean=(0.3,), std=(0.4,), dataset="digits", meta={"epochs": 20})
    """
    if isinstance(model, NormalizedModel):
        if mean is not None or std is not None:
            raise InputError("model is a NormalizedModel, which has its own mean/std: pass the bare model, or no mean/std")
        mean, std = model.mean.tolist(), model.std.tolist()
        model = model.model
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(arch, str) or arch.lower() not in ARCHITECTURES:
        raise InputError(
            f"unknown architecture {arch!r}: checkpoints can only record one of {', '.join(ARCHITECTURES)} "
            "(for other models save a TorchScript file with torch.jit.save, or a plain state_dict)"
        )
    arch = arch.lower()
    kwargs = _check_plain(dict(arch_kwargs), "arch_kwargs")
    mean_l, std_l = _stats(mean, "mean"), _stats(std, "std")
    if (mean_l is None) != (std_l is None):
        raise InputError("pass both mean and std (CLI: --mean and --std), or neither")
    if mean_l is not None and std_l is not None:
        NormalizedModel(nn.Identity(), mean_l, std_l)  # validates lengths and positive std
    lo, hi = check_bounds(bounds)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _load_state(build_architecture(arch, **kwargs), state, arch, "the model given to save_checkpoint")
    shape = _recorded_shape(input_shape, kwargs, dataset)

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_kwargs": kwargs,
        "state_dict": state,
        "weights_sha256": weights_sha256(state),
        "mean": mean_l,
        "std": std_l,
        "dataset": dataset if dataset is None else str(dataset),
        "input_shape": list(shape) if shape is not None else None,
        "bounds": [lo, hi],
        "meta": _check_plain(dict(meta or {}), "meta"),
    }
    _atomic_save(checkpoint, Path(path).expanduser())
    log.info("saved %s checkpoint to %s", arch, path)


def _recorded_shape(given: Sequence[int] | None, kwargs: Mapping[str, Any],
                    dataset: str | None) -> tuple[int, ...] | None:
    """The ``(C, H, W)`` a checkpoint records: ``given``, else ``in_channels`` x ``input_size`` x
    ``input_size`` from the architecture's arguments, else the named dataset's shape."""
    if given is not None:
        try:
            shape = tuple(int(v) for v in given)
        except (TypeError, ValueError):
            raise InputError(f"input_shape must be (C, H, W) integers, got {given!r}") from None
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"input_shape must be three positive integers (C, H, W), got {given!r}")
        return shape
    size, channels = kwargs.get("input_size"), kwargs.get("in_channels")
    if isinstance(size, int) and isinstance(channels, int):
        return (channels, size, size)
    return standard_input_shape(dataset) if dataset is not None else None


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


# ----------------------------------------------------------------------------- loading


def _load_state(model: nn.Module, state: Mapping[str, Any], arch: str, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as e:
        detail = str(e).replace("\n", " ").replace("\t", " ")
        if len(detail) > 600:
            detail = detail[:600] + " ..."
        raise InputError(
            f"{source} does not match the architecture {arch!r} (missing/unexpected keys or wrong shapes): "
            f"{detail}. Pick the architecture it was trained with (--arch) and its num_classes/in_channels"
        ) from e


def _corrupt(path: Path, why: str) -> InputError:
    return InputError(
        f"model file {path} is corrupt or truncated ({why}): re-download it, or re-save it "
        "(save_checkpoint, torch.save(model.state_dict(), path) or torch.jit.save)"
    )


def _sniff(path: Path) -> str:
    """``"torchscript"``, ``"torch-zip"`` or ``"legacy"``; raises InputError for files that are neither."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise _corrupt(path, "the file is empty")
    text = head.lstrip().lower()
    if text.startswith(b"<") or b"<html" in text:
        raise InputError(
            f"model file {path} is an HTML/XML page, not model weights: a download probably failed "
            "(login page, error page or redirect). It is corrupt or truncated as a model file: "
            "re-download it (e.g. the direct/raw file URL), or re-save it"
        )
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise _corrupt(path, f"unreadable zip archive: {e}") from e
        if any("/code/" in n or n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
            return "torchscript"
        if not any(n.endswith("data.pkl") for n in names):
            raise _corrupt(path, "a zip archive without PyTorch data")
        return "torch-zip"
    if head[:1] == b"\x80":  # pickle protocol header: torch's legacy (pre-1.6) format
        return "legacy"
    raise _corrupt(path, "not a PyTorch file")


def _verify(path: Path) -> str:
    """The CRC-32 of every member of a zip file (:func:`robustness.integrity.verify_torch_file`), as the
    report's ``integrity`` line."""
    if verify_torch_file(path, lambda why: _corrupt(path, why)):
        return "zip CRC-32 of every member verified"
    log.info("%s is in torch's legacy (non-zip) format, which has no checksums: it is read unverified", path)
    return "legacy torch format: no checksums, not verified"


def _torch_load(path: Path, map_location: MapLocation) -> Any:
    return load_weights_only(
        path, what="model file", corrupt=lambda why: _corrupt(path, why), map_location=map_location,
        objects_fix=("a whole model saved with torch.save(model) is such a file. Re-save the weights: "
                     "torch.save(model.state_dict(), path) (then pass --arch), robustness.loading.save_checkpoint, "
                     "or a TorchScript file (torch.jit.save)"))


def _move(model: nn.Module, map_location: MapLocation) -> nn.Module:
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    return model


@dataclass
class _Origin:
    """What the loader knows about a network's weights (see :class:`LoadedModel`)."""

    weights: str  # where they come from
    initial: bool | None = None  # True: built untrained; False: loaded from a file
    reason: str | None = None  # how ``initial`` is known, when True
    integrity: str | None = None
    input_shape: tuple[int, ...] | None = None
    normalized_as: str | None = None  # the usual normalization, when a missing one deserves a warning


def _finish(
    net: nn.Module,
    origin: _Origin,
    *,
    arch: str | None,
    source: str,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    map_location: MapLocation,
    dataset: str | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    meta: Mapping[str, Any] | None = None,
) -> LoadedModel:
    mean_l, std_l = _stats(mean, "mean"), _stats(std, "std")
    if (mean_l is None) != (std_l is None):
        raise InputError("pass both mean and std (CLI: --mean and --std), or neither")
    initial, reason, weights = origin.initial, origin.reason, origin.weights
    if untouched_batchnorm(net):  # the runner says the same of the evaluated model: one warning text
        initial, reason, weights = True, BATCHNORM_UNTOUCHED, f"{weights}; {BATCHNORM_UNTOUCHED}"
    messages = [initial_weights_warning(reason or weights)] if initial else []
    if mean_l is None and origin.normalized_as is not None and not initial:
        messages.append(
            f"{source} is a plain state dict of {arch}, evaluated without normalization (no --mean/--std, mean=/std=): "
            f"networks like it are usually trained on normalized inputs ({origin.normalized_as}); if this one was, "
            "pass the statistics of its training data, or the numbers are those of wrongly scaled inputs")
    sha256 = weights_sha256(net)
    model = NormalizedModel(net, mean_l, std_l) if mean_l is not None and std_l is not None else net
    model = _move(model, map_location).eval()
    return LoadedModel(
        model=model,
        arch=arch,
        source=source,
        dataset=dataset,
        bounds=check_bounds(bounds),
        mean=tuple(mean_l) if mean_l is not None else None,
        std=tuple(std_l) if std_l is not None else None,
        meta=dict(meta or {}),
        input_shape=origin.input_shape,
        weights_sha256=sha256,
        initial_weights=initial,
        weights=weights,
        integrity=origin.integrity,
        warnings=messages,
    )


def _usual_normalization(arch: str) -> str:
    """The normalization networks of ``arch`` are usually trained with, as CLI flags (for a warning): for a
    timm or torchvision architecture, the statistics its pretrained weights declare."""
    declared = _declared_normalization(arch)
    if declared is not None:
        return (f"its pretrained weights declare --mean {','.join(f'{v:g}' for v in declared[0])} "
                f"--std {','.join(f'{v:g}' for v in declared[1])}")
    name = "imagenet" if arch.startswith(("torchvision:", "timm:")) else "mnist" if arch == "small-cnn" else "cifar10"
    mean, std = standard_normalization(name) or ((), ())
    flags = f"--mean {','.join(f'{v:g}' for v in mean)} --std {','.join(f'{v:g}' for v in std)}"
    return f"e.g. {'ImageNet' if name == 'imagenet' else name.upper()}: {flags}"


def _declared_normalization(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` the pretrained weights of a ``timm:``/``torchvision:`` architecture declare."""
    prefix, _, name = arch.partition(":")
    if prefix == "timm":
        from robustness.sources.timm_models import declared_normalization as timm_declared

        return timm_declared(name)
    if prefix == "torchvision":
        from robustness.sources.torchvision_models import declared_normalization as torchvision_declared

        return torchvision_declared(name)
    return None


def load_model(
    spec: str,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    map_location: MapLocation = "cpu",
    min_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    dataset: str | None = None,
    threat_model: str | None = None,
    model_dir: str | Path | None = None,
    model_info_dir: str | Path | None = None,
    weights: str | None = None,
    norm: str | None = None,
) -> LoadedModel:
    """Load a model for evaluation on pixel-space inputs, from any of:

    * a model name (:func:`robustness.named_models.model_names`: ``digits-cnn``, ``digits-cnn-at``,
      the shipped models); an existing file of that name wins;
    * a robustness checkpoint (:func:`save_checkpoint`): architecture, normalization,
      dataset and bounds are read from it; arguments it records must match it, and so must the
      recorded SHA-256 of its weights;
    * a plain ``state_dict`` file (also nested under ``"state_dict"``/``"model"``, with a
      ``module.`` prefix, or of a :class:`NormalizedModel`): needs ``arch`` (one of
      :data:`robustness.architectures.ARCHITECTURES`, or ``torchvision:NAME`` / ``timm:NAME`` for a
      torchvision or timm architecture); ``num_classes``/``in_channels`` default to what the weights'
      shapes say.
      Without ``mean``/``std`` (and no NormalizedModel's in the file) it warns: networks of
      these architectures are usually trained on normalized inputs;
    * a TorchScript archive (``torch.jit.save``), detected from its zip contents;
    * a model source (:mod:`robustness.sources`): ``robustbench:NAME`` (with ``dataset``,
      ``threat_model`` (default from ``norm``), ``model_dir`` and ``model_info_dir``: a RobustBench
      ``model_info`` directory whose figures become the claims), ``timm:NAME`` (its pretrained
      weights) or ``torchvision:NAME`` (the weights ``weights`` names, ``DEFAULT`` when not given;
      ``weights="none"``: the untrained network, built with ``num_classes`` if given, with a
      warning). Each comes with the normalization its weights declare inside the model; ``mean``/
      ``std`` replace it (never both are applied), with a warning when they differ from it. The
      data checks (classes, channels, input shape) apply to them too. To evaluate your own trained
      weights of a timm or torchvision architecture, give the state dict file with
      ``arch="timm:NAME"`` / ``arch="torchvision:NAME"``;
    * ``package.module:factory``: imported and called (with ``num_classes``/``in_channels``
      when given and accepted). It is called a second time, under a forked random state, to
      find out whether it builds the network untrained (its weights then change with the seed).

    ``min_classes``: the class count the data needs (its largest label + 1), a lower bound, not
    a requirement of equality: a checkpoint or state dict keeps its own class count when it is
    at least that (a data file holding a few classes of ten evaluates a ten-class model), and it
    is the class count of models built untrained (``torchvision:``, factories) when
    ``num_classes`` is not given. ``input_shape``: the data's ``(C, H, W)``; a checkpoint that
    records other inputs is an error (the evaluation never resizes).

    Files are always read with ``torch.load(..., weights_only=True)``: no arbitrary objects
    are unpickled. The CRC-32 of every member of a zip file is verified first (torch does not
    check them); files in torch's legacy format have none. ``mean``/``std`` wrap the result in
    :class:`NormalizedModel`. The model is returned in eval mode on ``map_location``. A model
    known to hold its initial random weights (see the module docstring) warns
    (:class:`~robustness.errors.RobustnessWarning`); :attr:`LoadedModel.info` is the report's
    model block.

    Raises :class:`InputError` for a missing file, a corrupt/truncated/HTML file, a file holding
    pickled Python objects, a state dict without ``arch`` or not matching it, data of another
    shape than the checkpoint's, or a spec that cannot be imported.

    Example::

        loaded = load_model("weights.pt", arch="preact-resnet18", num_classes=10,
                            mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
        loaded.model(torch.rand(1, 3, 32, 32))
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"model must be a model name, a file path, robustbench:NAME, timm:NAME, torchvision:NAME or "
                         f"package.module:factory, "
                         f"got {spec!r}")
    named = None if Path(spec.strip()).expanduser().exists() else resolve(spec)
    if named is None and _from_source(spec, weights):
        from robustness.sources import SourceOptions, load_from_source

        if arch is not None:
            raise InputError(f"--arch (arch=) describes a plain state dict file; {spec.strip()} comes with its own "
                             "architecture: drop it")
        options = SourceOptions(dataset=dataset, threat_model=threat_model, norm=norm,
                                model_dir=Path(model_dir).expanduser() if model_dir is not None else None,
                                weights=weights, num_classes=num_classes, in_channels=in_channels,
                                model_info_dir=Path(model_info_dir).expanduser() if model_info_dir is not None
                                else None)
        loaded = _with_normalization(load_from_source(spec, options, map_location), mean, std)
    else:
        if weights is not None and not _is_torchvision(spec):
            raise InputError(f"--weights (weights=) names torchvision weights; {spec.strip()!r} is not a "
                             "torchvision:NAME model: drop it")
        loaded = _load(str(named) if named is not None else spec.strip(), arch=arch, num_classes=num_classes,
                       in_channels=in_channels, mean=mean, std=std,
                       map_location=map_location, min_classes=min_classes)
    if named is not None:
        loaded.source = spec.strip()
    check_data_fits(loaded, min_classes=min_classes, in_channels=in_channels, input_shape=input_shape)
    for message in loaded.warnings:
        warnings.warn(message, RobustnessWarning, stacklevel=2)
    return loaded


def check_data_fits(loaded: LoadedModel, *, min_classes: int | None = None, in_channels: int | None = None,
                    input_shape: Sequence[int] | None = None) -> None:
    """Refuse data that does not fit ``loaded``: another ``(C, H, W)`` than the model's recorded input shape
    (the evaluation never resizes), other channels, or labels beyond its class count (when known, e.g. a
    source model's ``meta["num_classes"]``). :func:`load_model` calls it; the CLI calls it again when it
    loads the model before the data (``imagenet``, whose images take the model's input transform).

    Example::

        check_data_fits(loaded, min_classes=10, input_shape=(3, 224, 224))
    """
    data_shape = tuple(int(v) for v in input_shape) if input_shape is not None else None
    if data_shape is not None and loaded.input_shape is not None and data_shape != tuple(loaded.input_shape):
        raise InputError(
            f"{loaded.source} was trained on inputs of shape {_shape_text(loaded.input_shape)} (C x H x W) but the "
            f"data has shape {_shape_text(data_shape)}: the evaluation never resizes; give data of the model's "
            "shape (resize the images first), or a model trained on this data")
    if in_channels is not None and loaded.input_shape is not None and int(loaded.input_shape[0]) != in_channels:
        raise InputError(f"{loaded.source} takes {loaded.input_shape[0]}-channel inputs but the data has "
                         f"{in_channels} channels{_channel_hint(int(loaded.input_shape[0]), in_channels)}")
    classes = loaded.meta.get("num_classes")
    if isinstance(classes, int) and min_classes is not None and classes < min_classes:
        raise InputError(f"the data has labels up to {min_classes - 1} but {loaded.source} has {classes} classes "
                         f"(labels 0..{classes - 1}): use data labelled for this model")


def _is_torchvision(spec: str) -> bool:
    return spec.strip().lower().startswith("torchvision:")


def _from_source(spec: str, weights: str | None) -> bool:
    """Whether ``spec`` loads through :mod:`robustness.sources` (``torchvision:NAME`` with ``weights="none"``
    is the untrained network, built here as before)."""
    from robustness.sources import source_prefix

    if source_prefix(spec) is None or Path(spec.strip()).expanduser().exists():
        return False
    return not (_is_torchvision(spec) and weights is not None and weights.strip().lower() == "none")


def _with_normalization(loaded: LoadedModel, mean: Sequence[float] | None, std: Sequence[float] | None
                        ) -> LoadedModel:
    """Apply the user's ``mean``/``std`` to a source model *instead of* the normalization its weights declare
    (never both), warning when they differ from the declared one."""
    mean_l, std_l = _stats(mean, "mean"), _stats(std, "std")
    if (mean_l is None) != (std_l is None):
        raise InputError("pass both mean and std (CLI: --mean and --std), or neither")
    if mean_l is None or std_l is None:
        return loaded
    wrapped = loaded.model
    if not isinstance(wrapped, NormalizedModel) or loaded.mean is None or loaded.std is None:
        raise InputError(f"{loaded.source} normalizes its inputs inside its own network (it takes inputs in [0, 1]): "
                         "--mean/--std (mean=/std=) would normalize them a second time: drop them")
    declared_mean, declared_std = list(loaded.mean), list(loaded.std)
    same = (len(mean_l) == len(declared_mean) and len(std_l) == len(declared_std)
            and all(abs(a - b) <= 1e-6 for a, b in zip(mean_l + std_l, declared_mean + declared_std)))
    if same:
        return loaded
    loaded.warnings.append(
        f"{loaded.source} is evaluated with another normalization than its weights declare: mean={mean_l}, "
        f"std={std_l} (--mean/--std, mean=/std=) instead of mean={declared_mean}, std={declared_std}; only the "
        "given one is applied, and if the weights were trained with theirs, these numbers are those of wrongly "
        "normalized inputs")
    net = wrapped.model
    loaded.model = NormalizedModel(net, mean_l, std_l).to(wrapped.mean.device).eval()
    loaded.mean, loaded.std = tuple(mean_l), tuple(std_l)
    return loaded


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def _load(spec: str, *, arch: str | None, num_classes: int | None, in_channels: int | None,
          mean: Sequence[float] | None, std: Sequence[float] | None, map_location: MapLocation,
          min_classes: int | None) -> LoadedModel:
    path = Path(spec).expanduser()
    built_classes = num_classes if num_classes is not None else min_classes  # for untrained builds
    if spec.lower().startswith("torchvision:"):
        name = spec.split(":", 1)[1].strip()
        net = _torchvision_model(name, built_classes, in_channels)
        origin = _Origin("built by torchvision with weights=None", initial=True,
                         reason=f"torchvision builds {name} with weights=None: no pretrained weights are loaded")
        return _finish(net, origin, arch=f"torchvision:{name}", source=spec, mean=mean, std=std,
                       map_location=map_location)
    if not path.exists() and _FACTORY_SPEC.match(spec):
        net, initial = _factory_model(spec, built_classes, in_channels)
        origin = _Origin(f"returned by {spec}", initial=initial,
                         reason=f"{spec} returns other weights under another random seed")
        return _finish(net, origin, arch=None, source=spec, mean=mean, std=std, map_location=map_location)
    if not path.exists():
        raise InputError(
            f"model file {path} not found (expected a checkpoint/state_dict/TorchScript file, "
            f"torchvision:NAME, package.module:factory or a model name){unknown_name_hint(spec)}"
        )
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise InputError(f"model path {path} is {what}: give a checkpoint, state_dict or TorchScript file")

    kind = _sniff(path)
    integrity = _verify(path)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but still supported
                net = torch.jit.load(str(path), map_location=map_location)
        except Exception as e:  # torch.jit raises RuntimeError and friends for damaged archives
            raise _corrupt(path, str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__) from e
        origin = _Origin("TorchScript file", initial=False, integrity=integrity)
        return _finish(net, origin, arch=None, source=spec, mean=mean, std=std, map_location=map_location)

    obj = _torch_load(path, map_location)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_checkpoint(obj, path, spec, arch=arch, num_classes=num_classes, in_channels=in_channels,
                                mean=mean, std=std, map_location=map_location, min_classes=min_classes,
                                integrity=integrity)
    state = _find_state_dict(obj, path)
    state, found_mean, found_std = _unwrap_state(state)
    if found_mean is not None and mean is None and std is None:
        mean, std = found_mean, found_std
    if arch is None:
        raise InputError(
            f"{path} is a plain state_dict, which does not say which network it belongs to: pass the architecture "
            f"(--arch / arch=), one of {', '.join(ARCHITECTURES)}, torchvision:NAME or timm:NAME; or re-save it with "
            "save_checkpoint"
        )
    key = arch.strip().lower()
    if not key.startswith(("torchvision:", "timm:")) and key not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}, torchvision:NAME "
                         "or timm:NAME")
    kwargs = _shape_kwargs(path, {}, state, num_classes=num_classes, in_channels=in_channels,
                           min_classes=min_classes, what="state_dict")
    if key.startswith("torchvision:"):
        key = f"torchvision:{arch.strip().split(':', 1)[1].strip()}"  # torchvision's names are case-sensitive
        net = _torchvision_model(key.split(":", 1)[1], kwargs.get("num_classes"), kwargs.get("in_channels"))
    elif key.startswith("timm:"):
        from robustness.sources.timm_models import timm_architecture

        key = f"timm:{arch.strip().split(':', 1)[1].strip()}"
        net = timm_architecture(key.split(":", 1)[1], kwargs.get("num_classes"), kwargs.get("in_channels"))
    else:
        net = build_architecture(key, **{**kwargs, **_infer_widths(key, state)})
    _load_state(net, state, key, f"state_dict {path}")
    origin = _Origin("state dict file", initial=False, integrity=integrity, normalized_as=_usual_normalization(key))
    return _finish(net, origin, arch=key, source=spec, mean=mean, std=std, map_location=map_location)


def _from_checkpoint(
    ckpt: Mapping[str, Any],
    path: Path,
    spec: str,
    *,
    arch: str | None,
    num_classes: int | None,
    in_channels: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    map_location: MapLocation,
    min_classes: int | None = None,
    integrity: str | None = None,
) -> LoadedModel:
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise InputError(
            f"{path} is a robustness checkpoint of version {version!r}, newer than this version "
            f"({CHECKPOINT_VERSION}) understands: upgrade the robustness package"
        )
    try:
        ck_arch = str(ckpt["arch"])
        ck_kwargs = dict(ckpt.get("arch_kwargs") or {})
        state = ckpt["state_dict"]
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(path, f"checkpoint field missing or malformed: {e}") from e
    if arch is not None and arch.lower() != ck_arch:
        raise InputError(f"{path} is a {ck_arch!r} checkpoint but arch={arch!r} was requested: drop --arch")
    if not isinstance(state, Mapping):
        raise _corrupt(path, "state_dict is not a dict of tensors")
    weights = _check_recorded_sha256(ckpt.get("weights_sha256"), state, path)
    ck_kwargs.update(_shape_kwargs(path, ck_kwargs, state, num_classes=num_classes, in_channels=in_channels,
                                   min_classes=min_classes, what="checkpoint"))
    ck_mean, ck_std = ckpt.get("mean"), ckpt.get("std")
    if mean is not None or std is not None:
        if ck_mean is not None and (_stats(mean, "mean") != list(ck_mean) or _stats(std, "std") != list(ck_std or [])):
            raise InputError(
                f"{path} records its normalization (mean={ck_mean}, std={ck_std}); "
                f"different mean/std were requested ({mean}, {std}): drop them"
            )
        ck_mean, ck_std = mean, std
    net = build_architecture(ck_arch, **ck_kwargs)
    _load_state(net, state, ck_arch, f"checkpoint {path}")
    bounds = ckpt.get("bounds") or (0.0, 1.0)
    dataset = ckpt.get("dataset")
    shape = _recorded_shape(ckpt.get("input_shape"), ck_kwargs, dataset)
    origin = _Origin(weights, initial=False, integrity=integrity, input_shape=shape)
    return _finish(net, origin, arch=ck_arch, source=spec, mean=ck_mean, std=ck_std, dataset=dataset,
                   bounds=(float(bounds[0]), float(bounds[1])), meta=ckpt.get("meta"), map_location=map_location)


def _check_recorded_sha256(recorded: Any, state: Mapping[str, Any], path: Path) -> str:
    """The checkpoint's weights must have the SHA-256 it records; returns the report's ``weights`` line."""
    if recorded is None:
        return "robustness checkpoint (it records no SHA-256 of its weights: written by an older version)"
    actual = weights_sha256(state)
    if actual != recorded:
        raise InputError(
            f"checkpoint {path} does not hold the weights it was saved with: their SHA-256 is {actual}, the "
            f"checkpoint records {recorded} (the file was altered after it was written): re-download it or re-save it")
    return "robustness checkpoint (its recorded SHA-256 verified)"


def _shape_kwargs(
    path: Path,
    recorded: Mapping[str, Any],
    state: Mapping[str, Any],
    *,
    num_classes: int | None,
    in_channels: int | None,
    min_classes: int | None,
    what: str,
) -> dict[str, int]:
    """``num_classes`` and ``in_channels`` to build the architecture with, for weights ``state``.

    The model's own values win: those ``recorded`` in a checkpoint, else what the weights'
    shapes say (the classifier's rows, the first convolution's input channels). A requested
    value must agree with them (one clear line, not a size-mismatch dump); ``min_classes`` (the
    data's label count) is only a lower bound, and the class count only when nothing else says.
    """
    saved = f"{path} was saved with" if what == "checkpoint" else f"the weights in {path} are for"

    def pick(name: str, own: int | None, requested: int | None, advice: str) -> int | None:
        """``own``: what the model says (recorded, else the weights' shapes); a request must agree."""
        if requested is not None and own is not None and own != requested:
            raise InputError(f"{saved} {name}={own} but {name}={requested} was requested{advice}")
        return requested if requested is not None else own

    own_classes = recorded.get("num_classes", _infer_num_classes(state))
    classes = pick("num_classes", own_classes, num_classes,
                   ": drop num_classes (data with fewer classes evaluates as it is)")
    if classes is None:
        classes = min_classes
    _check_enough_classes(path, classes, min_classes)
    own_channels = recorded.get("in_channels", _infer_in_channels(state))
    advice = _channel_hint(own_channels, in_channels) if own_channels and in_channels else ""
    channels = pick("in_channels", own_channels, in_channels, advice)
    return {k: int(v) for k, v in (("num_classes", classes), ("in_channels", channels)) if v is not None}


def _channel_hint(model_channels: int, data_channels: int) -> str:
    """What to do when data with ``data_channels`` channels meets a model taking ``model_channels``."""
    if model_channels == 1 and data_channels == 3:
        return (": the model takes grayscale inputs and the data is RGB (imagefolder: decodes color images as "
                "RGB); save the images in grayscale ('L' mode, e.g. PIL's .convert('L')) or give 1-channel data")
    if model_channels == 3 and data_channels == 1:
        return (": the model takes RGB inputs and the data is grayscale; convert the images to RGB "
                "(PIL's .convert('RGB')) or repeat the channel (x.repeat(1, 3, 1, 1))")
    if model_channels in (1, 3) and data_channels not in (1, 3):
        return (f": {data_channels} channels looks like channels-last data (N, H, W, C); store the inputs as "
                "(N, C, H, W) (x.permute(0, 3, 1, 2), or x.transpose(0, 3, 1, 2) in NumPy)")
    return f": give data with {model_channels} channels, or the model trained on this data"


def _check_enough_classes(path: Path, classes: int | None, needed: int | None) -> None:
    if classes is not None and needed is not None and classes < needed:
        raise InputError(f"the data has labels up to {needed - 1} but the model in {path} has {classes} classes "
                         f"(labels 0..{classes - 1}): use data labelled for this model, or the model trained on it")


def _find_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
    raise InputError(
        f"{path} holds a {type(obj).__name__} that is neither a robustness checkpoint nor a state_dict "
        "(a dict of tensors, possibly under 'state_dict' or 'model'): re-save the weights with save_checkpoint "
        "or torch.save(model.state_dict(), path)"
    )


def _unwrap_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[float] | None, list[float] | None]:
    """Strip ``module.`` (DataParallel) and a NormalizedModel wrapper (``model.`` + ``mean``/``std``)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    mean = std = None
    others = [k for k in state if k not in ("mean", "std")]
    if "mean" in state and "std" in state and others and all(k.startswith("model.") for k in others):
        mean, std = state["mean"].reshape(-1).tolist(), state["std"].reshape(-1).tolist()
        state = {k[len("model."):]: state[k] for k in others}
    return state, mean, std


def _infer_num_classes(state: Mapping[str, Tensor]) -> int | None:
    """Rows of the last 2-D weight (the classifier)."""
    for key in reversed(list(state)):
        if key.endswith("weight") and isinstance(state[key], Tensor) and state[key].dim() == 2:
            return int(state[key].shape[0])
    return None


def _infer_in_channels(state: Mapping[str, Tensor]) -> int | None:
    """Input channels of the first convolution."""
    for key, value in state.items():
        if key.endswith("weight") and isinstance(value, Tensor) and value.dim() == 4:
            return int(value.shape[1])
    return None


def _infer_widths(arch: str, state: Mapping[str, Tensor]) -> dict[str, int]:
    """Width-like constructor arguments read off the weights' shapes, for the built-in architectures."""
    try:
        if arch == "small-cnn" and "features.0.weight" in state:
            return {"width": int(state["features.0.weight"].shape[0])}
        if arch == "wrn-28-10" and "conv1.weight" in state and "fc.weight" in state:
            blocks = {k.split(".")[1] for k in state if k.startswith("block1.")}
            return {"widen_factor": int(state["fc.weight"].shape[1]) // 64, "depth": 6 * len(blocks) + 4}
    except (IndexError, ValueError):
        pass
    return {}


def _torchvision_model(name: str, num_classes: int | None, in_channels: int | None) -> nn.Module:
    from torchvision import models

    name = name.strip()
    available = models.list_models()
    if name not in available:
        close = [m for m in available if name.lower() in m.lower()][:10]
        hint = f" (did you mean {', '.join(close)}?)" if close else "; see torchvision.models.list_models()"
        raise InputError(f"unknown torchvision model {name!r}{hint}")
    if in_channels not in (None, 3):
        raise InputError(f"torchvision:{name} takes 3-channel inputs; in_channels={in_channels} is not supported"
                         f"{_channel_hint(3, in_channels)}")
    kwargs: dict[str, Any] = {"weights": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return models.get_model(name, **kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"could not build torchvision:{name} with {kwargs}: {e}") from e


def _import_from_here(module_name: str) -> Any:
    """Import ``module_name``; if its top-level package is not found, look in the current directory
    too (as ``python -m`` does, and the ``robustness`` console script does not)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != module_name.split(".")[0] or here in sys.path:
            raise
        sys.path.insert(0, here)
        try:
            return importlib.import_module(module_name)
        finally:
            sys.path.remove(here)


def _factory_model(spec: str, num_classes: int | None, in_channels: int | None) -> tuple[nn.Module, bool | None]:
    """The module ``spec`` names or builds, and whether it holds initial random weights (``None``: unknown).

    A factory is called a second time under a forked random state (the caller's random stream is
    left as one call leaves it): weights that differ between the calls depend on the seed, so the
    factory builds the network untrained. Equal weights were loaded (or initialized without
    randomness): unknown, and then only BatchNorm statistics can tell.
    """
    module_name, attr = spec.split(":", 1)
    try:
        module = _import_from_here(module_name)
    except ImportError as e:
        raise InputError(f"cannot import module {module_name!r} for model {spec!r}: {e} (run from the directory "
                         "that holds it, or put that directory on PYTHONPATH)") from e
    except Exception as e:  # the module's own code failed while importing
        raise InputError(f"importing module {module_name!r} for model {spec!r} failed: {type(e).__name__}: "
                         f"{e}") from e
    except SystemExit as e:  # sys.exit at import: never the caller's exit (a CLI would exit 0 unevaluated)
        raise InputError(f"importing module {module_name!r} for model {spec!r} called sys.exit({e.code!r}): "
                         "a module that defines a model must not exit when imported") from None
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise InputError(f"module {module_name!r} has no attribute {attr!r} (model spec {spec!r})")
        factory = getattr(factory, part)
    if isinstance(factory, nn.Module):
        net, initial = factory, None
    elif callable(factory):
        kwargs: dict[str, Any] = {}
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if value is None:
                continue
            if name in params or takes_any:
                kwargs[name] = value
            else:
                log.debug("%s does not take %s; not passing %s=%s", spec, name, name, value)
        net = _call_factory(spec, factory, kwargs)
        initial = _depends_on_seed(spec, factory, kwargs, net) if isinstance(net, nn.Module) else None
    else:
        raise InputError(f"{spec} is neither a callable nor an nn.Module")
    if not isinstance(net, nn.Module):
        raise InputError(f"{spec} returned a {type(net).__name__}, expected a torch.nn.Module")
    return net, initial


def _call_factory(spec: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)``; its failure, or its ``sys.exit``, is a one-line :class:`InputError`."""
    call = f"{spec}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        return factory(**kwargs)
    except InputError:
        raise
    except Exception as e:  # the user's factory failed: name it, one line, no traceback
        raise InputError(f"calling {call} failed: {type(e).__name__}: {e}") from e
    except SystemExit as e:  # never the caller's exit: a CLI would exit 0 without evaluating anything
        raise InputError(f"calling {call} called sys.exit({e.code!r}): the model's code tried to exit; a factory "
                         "must return an nn.Module") from None


def _depends_on_seed(spec: str, factory: Callable[..., Any], kwargs: dict[str, Any], net: nn.Module) -> bool | None:
    """``True`` when ``factory`` builds other weights from another random state (a second call, under
    a forked random state, which has moved on since the first); ``None`` when it cannot tell."""
    if untouched_batchnorm(net):
        return True  # known without a second call
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        again = _call_factory(spec, factory, kwargs)
    if again is net or not isinstance(again, nn.Module):
        return None
    first, second = net.state_dict(), again.state_dict()
    if first.keys() != second.keys():
        return None
    return True if any(not torch.equal(first[k].cpu(), second[k].cpu()) for k in first) else None


def default_model() -> LoadedModel:
    """The shipped SmallCNN trained on the digits train split (pixel space, normalization inside).

    Example::

        loaded = default_model()
        loaded.model(torch.rand(5, 1, 8, 8)).shape     # torch.Size([5, 10])
    """
    if not DEFAULT_MODEL_PATH.is_file():
        raise InputError(
            f"the default model {DEFAULT_MODEL_PATH} is missing from this installation: "
            "recreate it with `python scripts/train_digits_cnn.py` or reinstall the package"
        )
    return load_model(str(DEFAULT_MODEL_PATH))
