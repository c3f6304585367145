"""``torchvision:NAME``: a torchvision model with the weights its weights API names, normalization inside.

DECISION: ``torchvision:NAME`` without ``--weights`` (``weights=`` in Python) loads torchvision's
``DEFAULT`` pretrained weights, no longer an untrained network. ``--weights`` names others of the
model's weights enum (``IMAGENET1K_V1``, or in full ``ResNet50_Weights.IMAGENET1K_V2``); ``--weights
none`` builds the untrained network (its initial random weights, with the warning that says so).

The weights are read the way torchvision reads them (``torchvision.models.get_model(NAME,
weights=...)``), from torch.hub's cache (``$TORCH_HOME/hub/checkpoints/<file>``, see
:func:`torch.hub.get_dir`), downloaded there when missing and the network allows. What the weights
declare in ``weights.transforms()`` is applied:

* ``mean``/``std``: inside the model (:class:`robustness.model.NormalizedModel`): inputs in ``[0, 1]``;
* ``resize_size``, ``crop_size``, ``interpolation``: the
  :class:`~robustness.input_transform.InputTransform` of the ``imagenet`` data source and the
  model's ``input_shape``.

torchvision's file names carry the first hex digits of the file's SHA-256 (``resnet18-f37072fd.pth``),
which torch.hub checks only when it downloads. The loader hashes the file it read and warns loudly
(:class:`~robustness.errors.RobustnessWarning`, recorded in the report) when the digest does not start
with that prefix: the file is not the published weights. The weights' ImageNet-1K top-1 accuracy
(``weights.meta["_metrics"]``) becomes the model's ``claims``.

Example::

    loaded = load_torchvision("resnet18", SourceOptions(weights="IMAGENET1K_V1"), "cpu")
    loaded.claims["clean_accuracy"]     # 0.69758
"""

from __future__ import annotations

import difflib
import logging
import re
from typing import TYPE_CHECKING, Any

from robustness.errors import InputError
from robustness.input_transform import InputTransform
from robustness.sources import MapLocation, SourceOptions
from robustness.sources.weights_files import file_sha256, torch_hub_file

if TYPE_CHECKING:
    from robustness.loading import LoadedModel

__all__ = ["declared_normalization", "load_torchvision", "torchvision_weights"]

log = logging.getLogger(__name__)

_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: NAME-<sha256 prefix>.pth


def _check_name(name: str) -> None:
    from torchvision import models

    available = models.list_models()
    if name in available:
        return
    close = difflib.get_close_matches(name, available, n=5, cutoff=0.6) or [
        m for m in available if name.lower() in m.lower()][:5]
    hint = f" (did you mean {', '.join(close)}?)" if close else "; see torchvision.models.list_models()"
    raise InputError(f"unknown torchvision model {name!r}{hint}")


def torchvision_weights(name: str, weights: str | None) -> Any:
    """The weights enum member ``weights`` names for model ``name`` (``None``: ``DEFAULT``); a full
    ``Enum.MEMBER`` name (``ResNet50_Weights.IMAGENET1K_V2``) must belong to the model."""
    from torchvision import models

    _check_name(name)
    try:
        enum = models.get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise InputError(f"torchvision:{name} has no pretrained weights ({e}): pass --weights none for the "
                         "untrained network, or your own weights with --arch torchvision:NAME --model FILE.pt") from e
    members = list(enum.__members__)
    wanted = (weights or "DEFAULT").strip()
    if "." in wanted:
        head, _, wanted = wanted.partition(".")
        if head != enum.__name__:
            raise InputError(f"--weights {weights}: those are not weights of torchvision:{name}, whose weights are "
                             f"{enum.__name__}.{{{', '.join(members)}}}")
    for key in (wanted, wanted.upper()):
        if key in enum.__members__:
            return enum.__members__[key]
    raise InputError(f"torchvision:{name} has no weights {weights!r}: use one of {', '.join(members)} "
                     "(or none: untrained)")


def declared_normalization(name: str, weights: str | None = None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` the weights ``weights`` (default ``DEFAULT``) of ``name`` declare (``None``: none)."""
    try:
        transform = torchvision_weights(name, weights).transforms()
        return tuple(float(v) for v in transform.mean), tuple(float(v) for v in transform.std)
    except (InputError, AttributeError):
        return None


def _geometry(name: str, transform: Any) -> tuple[InputTransform, list[float], list[float]]:
    """``(input transform, mean, std)`` from ``weights.transforms()`` (image classification only)."""
    try:
        crop = [int(v) for v in transform.crop_size]
        resize = [int(v) for v in transform.resize_size]
        mean, std = [float(v) for v in transform.mean], [float(v) for v in transform.std]
        mode = getattr(transform.interpolation, "value", transform.interpolation)
    except (AttributeError, TypeError) as e:
        raise InputError(f"torchvision:{name}'s weights do not declare an image classification preprocessing "
                         f"(crop_size, resize_size, mean, std): {type(transform).__name__}") from e
    size = (crop[0], crop[-1])
    return InputTransform(size=size, resize=max(resize[0], max(size)), interpolation=str(mode)), mean, std


def _download(name: str, weights: Any, path: Any, prefix: str | None) -> None:
    """Fetch ``weights.url`` into torch.hub's cache, checking the SHA-256 prefix its name carries."""
    import torch.hub

    log.info("torchvision:%s: downloading %s to %s", name, weights.url, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=prefix, progress=False)
    except Exception as e:  # network and file errors: one line, what to do
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"torchvision:{name} ({weights}): {path} is not in torch.hub's cache and could not be "
                         f"downloaded ({type(e).__name__}: {detail}): put the file {weights.url} there (TORCH_HOME "
                         "sets the cache), or allow network access") from e


def load_torchvision(name: str, options: SourceOptions, map_location: MapLocation = "cpu") -> LoadedModel:
    """Load ``torchvision:NAME`` with the weights ``options.weights`` names (see the module docstring)."""
    from robustness.loading import _finish, _Origin, _torchvision_model

    name = name.strip()
    if options.weights is not None and options.weights.strip().lower() == "none":
        net = _torchvision_model(name, options.num_classes, options.in_channels)
        origin = _Origin("built by torchvision with weights=None (--weights none)", initial=True,
                         reason=f"torchvision builds {name} with weights=None: no pretrained weights are loaded")
        loaded = _finish(net, origin, arch=f"torchvision:{name}", source=f"torchvision:{name}", mean=None, std=None,
                         map_location=map_location)
        loaded.name = name
        return loaded
    from torchvision import models

    weights = torchvision_weights(name, options.weights)
    classes = len(weights.meta.get("categories") or []) or None
    if options.num_classes is not None and classes is not None and options.num_classes != classes:
        raise InputError(f"torchvision:{name} with {weights} has {classes} classes but num_classes="
                         f"{options.num_classes} was requested: drop it, or load your own weights with "
                         f"--arch torchvision:{name}")
    if options.in_channels not in (None, 3):
        raise InputError(f"torchvision:{name} takes 3-channel inputs but the data has {options.in_channels} channels")
    transform, mean, std = _geometry(name, weights.transforms())
    path = torch_hub_file(weights.url)
    found = _HASH_PREFIX.search(path.name)
    if not path.is_file():
        _download(name, weights, path, found.group(1) if found else None)
    log.info("torchvision:%s: reading %s", name, path)
    try:
        net = models.get_model(name, weights=weights)  # reads the cached file, as torchvision does
    except Exception as e:  # a damaged or foreign file in the cache: one line, what to do
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"torchvision:{name} ({weights}): {path} could not be loaded ({type(e).__name__}: "
                         f"{detail}): delete it and download {weights.url} again") from e
    messages = []
    sha = file_sha256(path) if path.is_file() else None
    if sha is None:
        integrity = "the weights file could not be found after loading: no file SHA-256"
    elif found is None:
        integrity = f"file SHA-256 {sha} (its name carries no hash prefix to check it against)"
    elif sha.startswith(found.group(1)):
        integrity = f"file SHA-256 {sha} matches the prefix {found.group(1)} in its published name"
    else:
        integrity = f"file SHA-256 {sha} does NOT match the prefix {found.group(1)} in its published name"
        messages.append(f"torchvision:{name}: the weights file {path} has SHA-256 {sha[:16]}..., not the prefix "
                        f"{found.group(1)} its name carries: these are not the published {weights} weights (a "
                        "replaced or damaged file); the published accuracy does not apply to them")
    acc1 = (weights.meta.get("_metrics") or {}).get("ImageNet-1K", {}).get("acc@1")
    claims = None if acc1 is None else {"source": "torchvision weights meta", "metric": "clean",
                                        "clean_accuracy": float(acc1) / 100, "robust_accuracy": None,
                                        "norm": None, "eps": None, "dataset": "imagenet"}
    origin = _Origin(f"torchvision {weights}: file {path}" + (f" (file SHA-256 {sha})" if sha else ""),
                     initial=False, integrity=integrity, input_shape=(3, *transform.size))
    loaded = _finish(net, origin, arch=f"torchvision:{name}", source=f"torchvision:{name}", mean=mean, std=std,
                     map_location=map_location, meta={"num_classes": classes, "weights_file_sha256": sha,
                                                      "weights_enum": str(weights)})
    loaded.name = name
    loaded.input_transform = transform
    loaded.claims = claims
    loaded.warnings.extend(messages)
    return loaded
