"""``robustbench:NAME``: a model of RobustBench's model zoo, loaded through RobustBench's own ``load_model``.

The model is ranked for a dataset (``cifar10``, ``cifar100``, ``imagenet``; default ``cifar10``) and a
threat model (``Linf``, ``L2``, ``corruptions``; default from the evaluation's norm: ``linf`` -> ``Linf``,
``l2`` -> ``L2``). Its weights live where RobustBench keeps them: ``<model_dir>/<dataset>/<threat>/<NAME>.pt``
(ensembles: ``<NAME>.pt_m0.pt``, ``<NAME>.pt_m1.pt`` ...), ``model_dir`` defaulting to RobustBench's own
``./models``. A missing file is downloaded with RobustBench's own downloader where the network allows;
where it does not, loading fails with one :class:`~robustness.errors.InputError` line naming the path, and
no partial file is left behind. An existing file is checked before RobustBench reads it: not empty, not an
HTML page (a failed download), and the CRC-32 of every zip member
(:func:`robustness.integrity.verify_torch_file`).

RobustBench models take inputs in ``[0, 1]`` and normalize inside their own ``forward``: they are *not*
wrapped in :class:`~robustness.model.NormalizedModel`. Their normalization buffers (``mu``/``sigma``,
``mean``/``std``, shape ``(1, C, 1, 1)``), when found, are recorded as :attr:`LoadedModel.mean`/``std``.

Recorded (:class:`~robustness.loading.LoadedModel`, the report's model block): source
``robustbench:NAME``, the architecture's class name, name, dataset, threat model, the SHA-256 of the
weights (:func:`robustness.integrity.weights_sha256`) and of each checkpoint file, the integrity check,
the preprocessing RobustBench applies to ImageNet for this model (an
:class:`~robustness.input_transform.InputTransform`; ``None`` for CIFAR's native 32x32) and the
leaderboard's claims (:func:`robustness.sources.leaderboard.leaderboard_claims`).

Example::

    loaded = load_robustbench("Carmon2019Unlabeled", SourceOptions(dataset="cifar10", threat_model="Linf"))
    loaded.model(torch.rand(1, 3, 32, 32))      # logits; inputs in [0, 1]
    loaded.claims["robust_accuracy"]            # 0.5953
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from robustness.errors import InputError
from robustness.input_transform import InputTransform
from robustness.integrity import pickled_global, verify_torch_file, weights_sha256
from robustness.loading import LoadedModel
from robustness.model_info import BATCHNORM_UNTOUCHED, initial_weights_warning, untouched_batchnorm
from robustness.sources import SourceOptions
from robustness.sources.leaderboard import leaderboard_claims
from robustness.sources.robustbench_compat import RobustBench, import_robustbench
from robustness.sources.weights_files import file_sha256

__all__ = ["DEFAULT_MODEL_DIR", "PREPROCESSING_TRANSFORMS", "load_robustbench", "resolve_dataset",
           "resolve_threat_model"]

log = logging.getLogger(__name__)

MapLocation = Union[str, torch.device, None]

#: RobustBench's own default model directory (``robustbench.utils.load_model``), relative to the working directory
DEFAULT_MODEL_DIR = Path("./models")

#: RobustBench's ImageNet preprocessings (``robustbench.data.PREPROCESSINGS``), each as the input transform that
#: gives the same images (tested against RobustBench's own): ``Crop288`` is a center crop without resizing,
#: ``Res224`` resizes both sides to 224 (the aspect ratio changes). A name not here is refused.
PREPROCESSING_TRANSFORMS: dict[str, InputTransform] = {
    "Res256Crop224": InputTransform(size=(224, 224), resize=256, interpolation="bilinear"),
    "BicubicRes256Crop224": InputTransform(size=(224, 224), resize=256, interpolation="bicubic"),
    "Crop288": InputTransform(size=(288, 288), resize=None, mode="crop"),
    "Res224": InputTransform(size=(224, 224), resize=None, interpolation="bilinear", mode="resize"),
}

_DATASET_ALIASES = {"cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10",
                    "cifar100": "cifar100", "cifar-100": "cifar100", "cifar_100": "cifar100",
                    "imagenet": "imagenet", "imagenet1k": "imagenet", "imagenet-1k": "imagenet"}
_NORM_THREATS = {"linf": "Linf", "l2": "L2"}
_THREAT_NORMS = {"Linf": "linf", "L2": "l2"}
_STAT_NAMES = (("mu", "sigma"), ("mean", "std"))
_CIFAR_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class _Files:
    """The checkpoint files RobustBench reads for one model (one, or one per ensemble member)."""

    directory: Path
    paths: tuple[Path, ...]


def resolve_dataset(rb: RobustBench, dataset: str | None) -> str:
    """``options.dataset`` as RobustBench's ``BenchmarkDataset`` value (default ``cifar10``)."""
    key = _DATASET_ALIASES.get((dataset or "cifar10").strip().lower())
    known = [d.value for d in rb.enums.BenchmarkDataset]
    if key is None or key not in known:
        raise InputError(f"RobustBench ranks no models on {dataset!r}: use --data {', '.join(known)}")
    return key


def resolve_threat_model(rb: RobustBench, dataset: str, threat_model: str | None, norm: str | None) -> str:
    """The threat model: ``threat_model`` (any case), else from ``norm`` (``linf`` -> ``Linf``, ``l2`` -> ``L2``)."""
    ranked = [t.value for t in rb.model_zoo.model_dicts[rb.enums.BenchmarkDataset(dataset)]]
    given = threat_model if threat_model is not None else _NORM_THREATS.get((norm or "linf").strip().lower(), norm)
    text = str(given).strip()
    if text.lower() == "l1":
        raise InputError("RobustBench ranks no L1 models: use --threat-model Linf or L2 (or --norm linf/l2)")
    by_lower = {t.lower(): t for t in (e.value for e in rb.enums.ThreatModel)}
    value = by_lower.get(text.lower())
    if value is None or value not in ranked:
        raise InputError(f"RobustBench ranks no {dataset} models for the threat model {given!r}: use "
                         f"--threat-model {', '.join(ranked)}")
    return value


def _unknown_name(rb: RobustBench, name: str, dataset: str, threat: str) -> InputError:
    models = list(rb.model_zoo.model_dicts[rb.enums.BenchmarkDataset(dataset)][rb.enums.ThreatModel(threat)])
    lower = {m.lower(): m for m in models}
    close = [lower[name.lower()]] if name.lower() in lower else difflib.get_close_matches(name, models, n=3, cutoff=0.6)
    elsewhere = [f"{d.value} {t.value}" for d, threats in rb.model_zoo.model_dicts.items()
                 for t, ms in threats.items() if name in ms]
    hint = f"did you mean {', '.join(close)}?" if close else f"{len(models)} models are ranked there"
    if elsewhere:
        hint += f" ({name} is ranked for {'; '.join(elsewhere)}: pass --data/--threat-model)"
    return InputError(f"RobustBench has no {dataset} {threat} model named {name!r}: {hint}")


def _reason(error: BaseException) -> str:
    """``Type: first line`` of ``error``, without urllib3's nested cause, at most about 120 characters."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = " ".join(lines[:2] if lines[0].endswith(":") else lines[:1]).split(" (Caused by ")[0]
    return f"{type(error).__name__}: {text if len(text) <= 160 else text[:157] + '...'}"


def _check_file(path: Path, source: str) -> str:
    """Refuse an empty file or an HTML page; verify the zip CRCs. Returns the integrity text."""
    def corrupt(why: str) -> InputError:
        return InputError(f"{source}: {path} is corrupt or truncated ({why}): delete it so that RobustBench downloads "
                          "it again, or put an intact copy there")

    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise corrupt("the file is empty")
    if head.lstrip().lower().startswith(b"<") or b"<html" in head.lower():
        raise corrupt("it is an HTML page, not weights: a failed download")
    if verify_torch_file(path, corrupt):
        return "zip CRC-32 of every member verified"
    return "legacy torch format: no checksums, not verified"


def _download(rb: RobustBench, gdrive_id: str, path: Path, source: str, model_dir: Path, dataset: str,
              threat: str) -> None:
    """Fetch ``path`` with RobustBench's own downloader; on failure remove what it left and raise one line."""
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    before = set(os.listdir(path.parent)) if path.parent.is_dir() else set()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("%s: %s is not there: downloading it (RobustBench's downloader, Google Drive id %s)",
                 source, path, gdrive_id)
        rb.utils.download_gdrive_new(gdrive_id, path)
        if not path.is_file() or path.stat().st_size == 0:
            raise OSError("the download produced no file")
    except (Exception, KeyboardInterrupt) as e:
        for leftover in set(os.listdir(path.parent)) - before if path.parent.is_dir() else ():
            if leftover.startswith(path.name):  # the file itself, or the downloader's temporary file
                (path.parent / leftover).unlink(missing_ok=True)
        for directory in created:  # deepest first; only the ones made here, only when empty
            try:
                directory.rmdir()
            except OSError:
                break
        if isinstance(e, KeyboardInterrupt):
            raise
        raise InputError(
            f"{source}: {path} is not there and could not be downloaded ({_reason(e)}): connect to the network, "
            f"or place the file there (or pass --model-dir DIR holding {dataset}/{threat}/{path.name}; now "
            f"{model_dir})") from e


def _files(rb: RobustBench, name: str, entry: dict[str, Any], model_dir: Path, dataset: str, threat: str,
           source: str) -> _Files:
    directory = model_dir / dataset / threat
    ids = entry.get("gdrive_id")
    base = directory / f"{name}.pt"
    if isinstance(ids, list):
        pairs = [(Path(f"{base}_m{i}.pt"), gid) for i, gid in enumerate(ids)]
    else:
        pairs = [(base, ids)]
    for path, gid in pairs:
        if not path.is_file():
            _download(rb, str(gid), path, source, model_dir, dataset, threat)
    return _Files(directory=directory, paths=tuple(p for p, _ in pairs))


def _normalization(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...], str] | None:
    """The outermost ``mu``/``sigma`` or ``mean``/``std`` buffer pair of shape (1, C, 1, 1), and where it is.
    Several different pairs at the same depth (an ensemble of differently normalized members): ``None``."""
    found: list[tuple[int, str, tuple[float, ...], tuple[float, ...]]] = []
    for prefix, module in net.named_modules():
        buffers = dict(module.named_buffers(recurse=False))
        for m_name, s_name in _STAT_NAMES:
            mean, std = buffers.get(m_name), buffers.get(s_name)
            if (mean is not None and std is not None and mean.dim() == 4 and mean.shape == std.shape
                    and mean.shape[0] == 1 and mean.shape[2:] == (1, 1)):
                where = f"{prefix + '.' if prefix else ''}{m_name}/{s_name}"
                found.append((prefix.count(".") + bool(prefix), where,
                              tuple(float(v) for v in mean.flatten()), tuple(float(v) for v in std.flatten())))
    if not found:
        return None
    depth = min(f[0] for f in found)
    top = [f for f in found if f[0] == depth]
    if len({(f[2], f[3]) for f in top}) != 1:
        return None
    return top[0][2], top[0][3], ", ".join(f[1] for f in top)


def _hub_model(rb: RobustBench, name: str, dataset: str, threat: str) -> str | None:
    """Where RobustBench takes the weights of a model that is not in its model directory, else ``None``."""
    timm_name = f"{name.lower().replace('-', '_')}_{dataset}_{threat.lower()}"
    import timm

    if timm.is_model(timm_name):
        return f"timm's pretrained weights {timm_name} (downloaded and cached by timm)"
    if dataset == "imagenet" and "Standard" in name:
        return "torchvision's pretrained weights (torch hub cache)"
    return None


def _input_transform(net: nn.Module, entry: dict[str, Any], dataset: str, source: str, hub: str | None
                     ) -> InputTransform | None:
    if dataset != "imagenet":
        return None
    key = entry.get("preprocessing")
    if key is None and hub is not None and hub.startswith("timm"):
        inner = getattr(net, "model", net)  # RobustBench wraps timm models in Sequential(normalize, model)
        cfg = getattr(inner, "pretrained_cfg", None) or getattr(inner, "default_cfg", None) or {}
        if {"input_size", "crop_pct"} <= set(cfg):
            return InputTransform.from_crop_pct(int(cfg["input_size"][-1]), float(cfg["crop_pct"]),
                                                str(cfg.get("interpolation", "bilinear")))
    if key in PREPROCESSING_TRANSFORMS:
        return PREPROCESSING_TRANSFORMS[key]
    raise InputError(
        f"{source}: RobustBench evaluates it with the preprocessing {key!r}, which the imagenet data source does "
        f"not reproduce (it supports {', '.join(PREPROCESSING_TRANSFORMS)}): refusing rather than measuring the "
        "model on other inputs than RobustBench's")


def _load_network(rb: RobustBench, name: str, model_dir: Path, dataset: str, threat: str, source: str,
                  hub: str | None, files: _Files | None) -> nn.Module:
    try:
        net = rb.utils.load_model(model_name=name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
    except InputError:
        raise
    except Exception as e:  # RobustBench raises RuntimeError, KeyError, UnpicklingError, OSError... for bad files
        where = " or ".join(str(p) for p in files.paths) if files is not None else str(hub)
        pickled = pickled_global(e)
        if pickled is not None:
            raise InputError(f"{source}: {where} holds pickled Python objects "
                             f"({pickled}), which are never unpickled here because unpickling can run arbitrary "
                             "code: use a checkpoint that holds only tensors") from e
        if hub is not None:
            raise InputError(f"{source}: RobustBench could not load {hub} ({_reason(e)}): connect to the network "
                             "once so that the hub cache holds them") from e
        raise InputError(f"{source}: RobustBench could not load its weights from {where} ({_reason(e)}): delete "
                         "the file so that it is downloaded again, or put the right one there") from e
    if not isinstance(net, nn.Module):
        raise InputError(f"{source}: RobustBench returned a {type(net).__name__}, not a torch module")
    return net


def load_robustbench(name: str, options: SourceOptions, map_location: MapLocation = "cpu") -> LoadedModel:
    """Load ``robustbench:NAME`` (see the module docstring); the model in eval mode on ``map_location``.

    Raises :class:`InputError` (one line) for a missing robustbench, an unknown dataset, threat model
    (``l1``: RobustBench ranks none) or name (with the closest names), a missing file that cannot be
    downloaded, a corrupt file, an ImageNet preprocessing the data source cannot reproduce, or a class
    count other than the data's.
    """
    rb = import_robustbench()
    name = name.strip()
    source = f"robustbench:{name}"
    dataset = resolve_dataset(rb, options.dataset)
    threat = resolve_threat_model(rb, dataset, options.threat_model, options.norm)
    models = rb.model_zoo.model_dicts[rb.enums.BenchmarkDataset(dataset)][rb.enums.ThreatModel(threat)]
    if name not in models:
        raise _unknown_name(rb, name, dataset, threat)
    entry = models[name]
    classes = rb.utils.DATASET_CLASSES[rb.enums.BenchmarkDataset(dataset)]
    if options.num_classes is not None and options.num_classes != classes:
        raise InputError(f"{source} is a {dataset} model with {classes} classes but the data has "
                         f"{options.num_classes}: evaluate it on {dataset}")
    if options.in_channels is not None and options.in_channels != 3:
        raise InputError(f"{source} takes RGB images (3 channels) but the data has {options.in_channels}")
    model_dir = (Path(options.model_dir).expanduser() if options.model_dir is not None else DEFAULT_MODEL_DIR).absolute()
    hub = _hub_model(rb, name, dataset, threat)
    if hub is None and entry.get("gdrive_id") is None:
        raise InputError(f"{source}: RobustBench lists no weights for this model (no download id): pick another")

    input_transform: InputTransform | None = None
    if hub is None or not hub.startswith("timm"):  # refuse a preprocessing the data cannot match before downloading
        input_transform = _input_transform(nn.Identity(), entry, dataset, source, None)
    files = None if hub is not None else _files(rb, name, entry, model_dir, dataset, threat, source)
    integrity = ("; ".join(f"{p.name}: {_check_file(p, source)}" for p in files.paths) if files is not None
                 else f"{hub}: downloaded and read by that library, not verified here")
    net = _load_network(rb, name, model_dir, dataset, threat, source, hub, files)
    if hub is not None and hub.startswith("timm"):
        input_transform = _input_transform(net, entry, dataset, source, hub)

    normalization = _normalization(net)
    if files is not None:
        weights = "RobustBench model zoo: " + ", ".join(f"{p} (file SHA-256 {file_sha256(p)})" for p in files.paths)
    else:
        weights = f"RobustBench model zoo: {hub}"
    if normalization is None:
        weights += "; RobustBench models take [0, 1] inputs and normalize inside their own forward"
    else:
        weights += f"; normalizes [0, 1] inputs inside its own forward ({normalization[2]})"

    warnings_: list[str] = []
    initial = False
    if untouched_batchnorm(net):
        initial = True
        weights += f"; {BATCHNORM_UNTOUCHED}"
        warnings_.append(initial_weights_warning(BATCHNORM_UNTOUCHED))
    norm = (options.norm or "").strip().lower()
    if threat in _THREAT_NORMS and norm and norm != _THREAT_NORMS[threat]:
        warnings_.append(f"{source} is ranked for {threat} but is evaluated in the {norm} norm: its leaderboard "
                         "numbers are not comparable with this evaluation's")

    sha256 = weights_sha256(net)
    if map_location is not None:
        net = net.to(map_location)
    net.eval()
    claims = leaderboard_claims(name, dataset, threat, options.model_info_dir)
    if claims is not None:  # the leaderboard's figures are on this dataset's test set (ImageNet: its 5,000 images)
        claims = {**claims, "dataset": dataset}
    if claims is None:
        log.info("%s: RobustBench publishes no leaderboard numbers for it (%s %s)", source, dataset, threat)
    shape = (3, *input_transform.size) if input_transform is not None else _CIFAR_SHAPE if dataset != "imagenet" else None
    return LoadedModel(
        model=net, arch=type(net).__name__, source=source, dataset=dataset,
        mean=normalization[0] if normalization else None, std=normalization[1] if normalization else None,
        input_shape=shape, weights_sha256=sha256, initial_weights=initial, weights=weights, integrity=integrity,
        warnings=warnings_, name=name, threat_model=threat, input_transform=input_transform, claims=claims,
        meta={"num_classes": classes},  # check_data_fits refuses labels beyond them before any work
    )
