"""``timm:NAME``: a timm model with its pretrained weights, its normalization inside, its input geometry recorded.

``NAME`` is a timm model name, with or without a pretrained tag (``resnet50``, ``resnet50.a1_in1k``;
without a tag timm picks its default one). The model is built by ``timm.create_model(NAME,
pretrained=True)``, which reads the weights from the Hugging Face hub cache (``HF_HUB_CACHE``, by
default ``$HF_HOME/hub``) and downloads them there when the network allows (not with
``HF_HUB_OFFLINE=1``). What the weights declare in their ``pretrained_cfg`` is applied:

* ``mean``/``std``: inside the model (:class:`robustness.model.NormalizedModel`), so the model takes
  pixel-space inputs in ``[0, 1]``;
* ``input_size``, ``crop_pct``, ``interpolation``: the
  :class:`~robustness.input_transform.InputTransform` the ``imagenet`` data source applies
  (resize to ``floor(size / crop_pct)``, center-crop ``size``), and the model's ``input_shape``.

The report records the name, ``arch`` ``timm:<architecture>``, the SHA-256 of the weight file that
was read (found in the hub cache) and of the network's weights. Weights that are not cached and
cannot be downloaded are one :class:`~robustness.errors.InputError` line that says which file was
looked for and where; an unknown name is one line with the closest timm names.

Example::

    loaded = load_timm("resnet50.a1_in1k", SourceOptions(), "cpu")
    loaded.input_transform       # InputTransform(size=(224, 224), resize=235, interpolation='bicubic')
    loaded.model(torch.rand(1, 3, 224, 224)).shape      # torch.Size([1, 1000])
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustness.errors import InputError
from robustness.input_transform import InputTransform
from robustness.sources import MapLocation, SourceOptions
from robustness.sources.weights_files import file_sha256, hf_cache_dir, hf_cached_file, hf_offline, torch_hub_file

if TYPE_CHECKING:
    from robustness.loading import LoadedModel

__all__ = ["HF_WEIGHT_FILES", "declared_normalization", "load_timm", "timm_architecture", "timm_pretrained_cfg"]

log = logging.getLogger(__name__)

#: the files timm reads from a hub repository, in its order (safetensors first)
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:
        raise InputError(f"timm: models need the timm package, which is not installed ({e}): install the hub "
                         "extra, pip install -e \".[hub]\" (timm, huggingface_hub, safetensors)") from e
    return timm


def _check_name(name: str) -> None:
    """An unknown model name is one line with the closest names timm knows."""
    timm = _timm()
    if timm.is_model(name):
        return
    arch = name.split(".", 1)[0]
    known = timm.list_models()
    close = difflib.get_close_matches(arch, known, n=5, cutoff=0.6) or [m for m in known if arch.lower() in m][:5]
    hint = f" (did you mean {', '.join(close)}?)" if close else "; timm.list_models() lists its names"
    raise InputError(f"unknown timm model {name!r}{hint}")


def timm_pretrained_cfg(name: str) -> Any:
    """timm's ``PretrainedCfg`` of ``name`` (with its tag, or the default tag), or an :class:`InputError`."""
    _check_name(name)
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # the architecture exists, the tag does not
        arch = name.split(".", 1)[0]
        tags = _timm().list_pretrained(f"{arch}.*")
        raise InputError(f"timm has no pretrained weights {name!r}: the tags of {arch} are "
                         f"{', '.join(tags) if tags else 'none'}") from None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise InputError(f"timm has no pretrained weights for {name!r}: evaluate your own trained weights with "
                         f"--arch timm:{name.split('.', 1)[0]} --model FILE.pt (arch= in Python)")
    return cfg


def timm_architecture(name: str, num_classes: int | None, in_channels: int | None) -> Any:
    """``timm.create_model(name, pretrained=False)`` with ``num_classes``/``in_chans`` when given: the
    network a user's own state dict (``--arch timm:NAME``) is loaded into."""
    _check_name(name)
    kwargs: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_channels is not None:
        kwargs["in_chans"] = in_channels
    try:
        return _timm().create_model(name, **kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"could not build timm:{name} with {kwargs}: {e}") from e


def declared_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``(mean, std)`` the pretrained weights of ``name`` declare (``None``: timm has none for it)."""
    try:
        cfg = timm_pretrained_cfg(name)
    except InputError:
        return None
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def _weights_location(cfg: Any) -> tuple[str, Path | None, str]:
    """``(kind, cached file or None, where it was looked for)`` for the weights ``cfg`` names, the way
    timm resolves them: an explicit file, else the hub (``hf_hub_id``), else a URL in torch.hub's cache."""
    if cfg.file:
        path = Path(cfg.file)
        return "file", (path if path.is_file() else None), str(path)
    if cfg.hf_hub_id:
        repo, revision = _hub_repo(cfg)
        folder = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
        files = _hub_files(cfg)
        return "hf-hub", hf_cached_file(repo, files, revision), f"{' or '.join(files)} under {folder}"
    path = torch_hub_file(str(cfg.url))
    return "url", (path if path.is_file() else None), str(path)


def _hub_repo(cfg: Any) -> tuple[str, str | None]:
    repo, _, revision = str(cfg.hf_hub_id).partition("@")
    return repo, revision or None


def _hub_files(cfg: Any) -> tuple[str, ...]:
    return (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES


def _download(name: str, cfg: Any, kind: str, where: str) -> Path:
    """Fetch the weights into the cache timm uses (the hub's, or torch.hub's for a URL); one line on failure."""
    try:
        if kind == "hf-hub":
            from huggingface_hub import hf_hub_download
            try:
                from huggingface_hub.errors import EntryNotFoundError
            except ImportError:  # huggingface_hub before 0.23
                from huggingface_hub.utils import EntryNotFoundError

            repo, revision = _hub_repo(cfg)
            files = _hub_files(cfg)
            for i, filename in enumerate(files):
                try:
                    return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=str(hf_cache_dir())))
                except EntryNotFoundError:
                    if i == len(files) - 1:
                        raise
        import torch.hub

        path = torch_hub_file(str(cfg.url))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(str(cfg.url), str(path), progress=False)
        return path
    except InputError:
        raise
    except Exception as e:  # network, hub and file errors: one line, what to do
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"timm:{name}: its pretrained weights are not cached (looked for {where}) and could not be "
                         f"downloaded ({type(e).__name__}: {detail}): allow network access, or put the files in the "
                         "Hugging Face hub cache (HF_HOME / HF_HUB_CACHE)") from e


def _read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a weights file, safely: safetensors, or ``torch.load(weights_only=True)``."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise InputError(f"{path} is a safetensors file and the safetensors package is not installed: "
                             "pip install safetensors") from e
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as e:  # safetensors raises its own errors for damaged files
            raise InputError(f"weights file {path} is corrupt or truncated ({type(e).__name__}: {e}): delete it "
                             "from the cache and download it again") from e
    from robustness.integrity import load_weights_only

    def corrupt(why: str) -> InputError:
        return InputError(f"weights file {path} is corrupt or truncated ({why}): delete it from the cache and "
                          "download it again")

    obj = load_weights_only(path, what="weights file", corrupt=corrupt, objects_fix="use its safetensors file")
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):  # timm's own order (use_ema)
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return dict(obj[key])
    if not isinstance(obj, dict):
        raise corrupt(f"it holds a {type(obj).__name__}, not a dict of tensors")
    return dict(obj)


def load_timm(name: str, options: SourceOptions, map_location: MapLocation = "cpu") -> LoadedModel:
    """Load ``timm:NAME`` with its pretrained weights (see the module docstring).

    The weight file is found in the cache (downloaded there first when missing and the network
    allows), read safely (safetensors, or ``torch.load(weights_only=True)``: nothing is unpickled),
    hashed, and handed to ``timm.create_model(NAME, pretrained=True)``, which loads it as it loads
    any pretrained weights (its checkpoint filters, its classifier handling): the file hashed is the
    file the model holds.
    """
    from robustness.loading import _finish, _Origin

    name = name.strip()
    cfg = timm_pretrained_cfg(name)
    channels = int(cfg.input_size[0])
    if options.in_channels is not None and options.in_channels != channels:
        raise InputError(f"timm:{name} takes {channels}-channel inputs but the data has {options.in_channels} "
                         "channels: give it RGB images (the imagenet data source, or a file of 3-channel images)")
    if options.num_classes is not None and cfg.num_classes and options.num_classes != cfg.num_classes:
        raise InputError(f"timm:{name}'s pretrained weights have {cfg.num_classes} classes but num_classes="
                         f"{options.num_classes} was requested: drop it, or fine-tune and load your own weights "
                         f"with --arch timm:{cfg.architecture}")
    if cfg.custom_load:
        raise InputError(f"timm:{name}'s weights are loaded by the model's own code (custom_load), which this loader "
                         "does not run: convert them to a state dict and pass --arch timm:NAME --model FILE.pt")
    kind, path, where = _weights_location(cfg)
    if path is None:
        if kind == "file":
            raise InputError(f"timm:{name}: its pretrained weights file {where} does not exist")
        if kind == "hf-hub" and hf_offline():
            raise InputError(f"timm:{name}: its pretrained weights are not cached (looked for {where}) and "
                             "HF_HUB_OFFLINE is set, so nothing is downloaded: allow network access (unset "
                             "HF_HUB_OFFLINE) to download them, or put the files in the Hugging Face hub cache "
                             "(HF_HOME / HF_HUB_CACHE)")
        log.info("timm:%s: downloading its weights (%s)", name, where)
        path = _download(name, cfg, kind, where)
    log.info("timm:%s: reading %s", name, path)
    sha = file_sha256(path)
    state = _read_state_dict(path)
    try:
        net = _timm().create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state})
    except InputError:
        raise
    except Exception as e:  # timm's loading of the weights failed: a file that does not fit the model
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"timm:{name}: the weights file {path} does not load into the model ({type(e).__name__}: "
                         f"{detail}): delete it from the cache and download it again") from e
    declared = {k: v for k, v in dict(getattr(net, "pretrained_cfg", None) or cfg.to_dict()).items()
                if k != "state_dict"}
    for attr in ("pretrained_cfg", "default_cfg"):  # do not keep a second copy of the weights on the model
        held = getattr(net, attr, None)
        if isinstance(held, dict) and "state_dict" in held:
            held["state_dict"] = None
    del state
    size = tuple(int(v) for v in declared.get("input_size") or cfg.input_size)
    transform = InputTransform.from_crop_pct(size[1:], float(declared.get("crop_pct") or 1.0),
                                             str(declared.get("interpolation") or "bilinear"))
    messages = []
    crop_mode = declared.get("crop_mode") or "center"
    if crop_mode != "center":
        messages.append(f"timm:{name}'s weights declare crop_mode={crop_mode!r}; the imagenet data source resizes "
                        f"the shorter side and center-crops ({transform.to_dict()}), which differs from it: "
                        "its accuracy may differ from the published one")
    architecture = declared.get("architecture") or cfg.architecture
    tag = declared.get("tag") or cfg.tag
    origin = _Origin(f"timm pretrained weights {cfg.hf_hub_id or cfg.url or cfg.file}: file {path} "
                     f"(file SHA-256 {sha})", initial=False, input_shape=size,
                     integrity="file SHA-256 recorded (timm publishes none to check it against)")
    loaded = _finish(net, origin, arch=f"timm:{architecture}", source=f"timm:{name}",
                     mean=list(declared.get("mean") or cfg.mean), std=list(declared.get("std") or cfg.std),
                     map_location=map_location,
                     meta={"num_classes": int(declared.get("num_classes") or cfg.num_classes),
                           "weights_file": str(path), "weights_file_sha256": sha})
    loaded.name = f"{architecture}.{tag}" if tag else architecture
    loaded.input_transform = transform
    loaded.warnings.extend(messages)
    return loaded
