"""Test helpers: what the Hugging Face hub cache and torch.hub's cache would hold, written by the test, offline.

:func:`offline_hubs` points ``HF_HOME``/``HF_HUB_CACHE``/``TORCH_HOME`` at a temporary directory, sets
``HF_HUB_OFFLINE=1`` (also in ``huggingface_hub.constants``, which reads the environment once, at import)
and makes every download fail at once, so no test reaches the network. :func:`write_timm_cache` and
:func:`write_torchvision_cache` put a tiny real model's own random weights where timm and torchvision
read them, under the names they read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

#: a tiny timm model with a pretrained tag (ViT: no BatchNorm, so random weights are not flagged untrained)
TIMM_NAME = "test_vit.r160_in1k"
#: a small torchvision model with pretrained weights (1.2M parameters)
TORCHVISION_NAME = "squeezenet1_1"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def timm_resize(name: str = TIMM_NAME) -> int:
    """The shorter side timm's ``name`` weights declare before their center crop: ``int(size / crop_pct)`` from
    the installed timm's ``pretrained_cfg`` (its crop_pct differs between timm versions: 0.875 in 1.0.9, 0.95 in
    1.0.31 for the test models)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1] / cfg.crop_pct)


@dataclass
class Hubs:
    root: Path
    hf_cache: Path
    torch_home: Path


def _no_download(*args: object, **kwargs: object) -> None:
    raise OSError("network is unreachable (the test forbids downloads)")


def offline_hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hubs:
    """Empty caches under ``tmp_path``, offline: any download attempt fails fast."""
    import huggingface_hub
    import torch.hub
    from huggingface_hub import constants

    hf_home, torch_home = tmp_path / "hf", tmp_path / "torch"
    hf_cache = hf_home / "hub"
    for name, value in (("HF_HOME", hf_home), ("HF_HUB_CACHE", hf_cache), ("TORCH_HOME", torch_home),
                        ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    return Hubs(tmp_path, hf_cache, torch_home)


def timm_net(seed: int = 0, name: str = TIMM_NAME) -> nn.Module:
    """The timm architecture of ``name`` with random weights of ``seed``, in eval mode."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def write_timm_cache(hubs: Hubs, net: nn.Module, name: str = TIMM_NAME, filename: str = "model.safetensors") -> Path:
    """``net``'s weights as the hub cache holds timm's ``name``: ``models--timm--NAME/snapshots/REV/FILE``
    with ``refs/main`` naming the revision. Returns the file."""
    repo = hubs.hf_cache / f"models--timm--{name}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    path = snapshot / filename
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def torchvision_net(seed: int = 0, name: str = TORCHVISION_NAME) -> nn.Module:
    from torchvision import models

    torch.manual_seed(seed)
    return models.get_model(name, weights=None).eval()


def write_torchvision_cache(hubs: Hubs, net: nn.Module, name: str = TORCHVISION_NAME) -> Path:
    """``net``'s weights where torchvision reads ``name``'s DEFAULT weights: ``TORCH_HOME/hub/checkpoints/<file>``."""
    from torchvision import models

    url = models.get_model_weights(name).DEFAULT.url
    path = hubs.torch_home / "hub" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
