"""Where the hub libraries keep pretrained weight files, and the SHA-256 of the file that was read.

timm reads its pretrained weights through the Hugging Face hub cache (``HF_HUB_CACHE``, by default
``$HF_HOME/hub``: ``models--ORG--NAME/snapshots/<revision>/model.safetensors``, with ``refs/main``
naming the revision), torchvision through torch.hub's cache (``$TORCH_HOME/hub/checkpoints/<file>``,
:func:`torch.hub.get_dir`). The functions here find those files without downloading anything, so a
loader can say, before any network access, which file it will read and, after, which one it did.

Example::

    path = hf_cached_file("timm/resnet50.a1_in1k", ("model.safetensors", "pytorch_model.bin"))
    digest = file_sha256(path) if path is not None else None
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["file_sha256", "hf_cache_dir", "hf_cached_file", "hf_offline", "torch_hub_file"]

_CHUNK = 1 << 20
_TRUE = ("1", "on", "yes", "true")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of the file's bytes (symlinks followed: the hub cache links snapshots to blobs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hf_offline() -> bool:
    """Whether the Hugging Face hub may not be reached: ``HF_HUB_OFFLINE`` as huggingface_hub read it at
    import, or as the environment says now."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub downloads into (``HF_HUB_CACHE``; ``HF_HOME/hub`` by default)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        return Path(os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub")))


def hf_cached_file(repo_id: str, filenames: Sequence[str], revision: str | None = None) -> Path | None:
    """The first of ``filenames`` in the hub cache's snapshot of ``repo_id`` (``None``: none is cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=str(hf_cache_dir()), revision=revision)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def torch_hub_file(url: str) -> Path:
    """Where torch.hub keeps (or would download) the file at ``url``: ``<torch.hub.get_dir()>/checkpoints/<name>``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
