"""Integrity of the files the harness reads, and a fingerprint of the weights it measures.

* :func:`verify_torch_file` checks the CRC-32 of every member of a PyTorch zip file
  (``torch.save`` since PyTorch 1.6, TorchScript): ``torch.load`` does not, so flipped bytes in
  a tensor's data would otherwise load silently as other weights. Files in torch's legacy
  (pre-1.6, non-zip) format carry no checksums and cannot be verified: they are read as they are.
* :func:`load_weights_only` reads a file with ``torch.load(..., weights_only=True)`` and turns its
  failures into one-line :class:`~robustness.errors.InputError`: a file that holds pickled Python
  objects is said to hold them (they are never unpickled: that can run arbitrary code), anything
  else is corrupt. No message suggests ``weights_only=False``.
* :func:`read_torch_file` does both; model checkpoints, data files, training states and the
  evaluation state's records are all read through it.
* :func:`weights_sha256` is the SHA-256 of a state dict: tensor names, dtypes, shapes and bytes,
  in the order of the names, so the same weights give the same hash loaded from a file or held
  in memory, on any device. Checkpoints record it and reports name it.

Example::

    state = read_torch_file(path, what="model file", corrupt=lambda why: InputError(f"{path}: {why}"),
                            objects_fix="save model.state_dict() instead")
    weights_sha256(model.state_dict())    # '3f1c...'
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from robustness.errors import InputError

__all__ = ["hash_tensor", "load_weights_only", "pickled_global", "read_torch_file", "verify_torch_file",
           "weights_sha256"]

log = logging.getLogger(__name__)

MapLocation = Union[str, torch.device, None]
CorruptError = Callable[[str], InputError]

_ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 20
_GLOBAL = re.compile(r"unsupported global:?\s*(?:global\s+)?([\w.]+)", re.IGNORECASE)
# lines of torch's weights-only refusal that are advice (never shown: one of them says weights_only=False)
_ADVICE = re.compile(r"weights.only|check the documentation|file an issue|do those steps|alternatively",
                     re.IGNORECASE)


def verify_torch_file(path: Path, corrupt: CorruptError) -> bool:
    """Check the CRC-32 of every member of the PyTorch zip file ``path``, reading it in chunks.

    Returns ``True`` when ``path`` is a zip file whose every member matched its checksum, ``False``
    for a file in torch's legacy (non-zip) format, which has none to check. A member whose bytes
    changed after it was written, or an unreadable archive, raises ``corrupt(why)`` (the caller's
    :class:`InputError`, which names the file); ``why`` names the member.
    """
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            log.debug("%s is not a zip file (torch's legacy format?): it has no checksums to verify", path)
            return False
    member = None
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                member = info.filename
                with zf.open(info) as data:  # zipfile compares the CRC-32 when it reaches the end
                    while data.read(_CHUNK):
                        pass
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        if member is None:
            raise corrupt(f"unreadable zip archive: {e}") from e
        why = "fails its CRC-32 check" if "crc" in str(e).lower() else f"is unreadable: {e}"
        raise corrupt(f"member {member} {why}: its bytes changed after it was written (a damaged download, "
                      "copy or disk)") from e
    return True


def pickled_global(error: BaseException) -> str | None:
    """The Python object (``module.name``) whose unpickling ``torch.load(weights_only=True)`` refused,
    or ``None`` when ``error`` is no such refusal. Case-insensitive: torch has written both
    ``Unsupported global: GLOBAL x`` and ``unsupported GLOBAL x``."""
    found = _GLOBAL.search(str(error))
    return found.group(1).rstrip(".") if found else None


def _reason(error: BaseException) -> str:
    """The first line of torch's error that says what went wrong, without torch's advice."""
    for line in str(error).splitlines():
        line = line.strip()
        if line and not _ADVICE.search(line):
            return re.sub(r"^WeightsUnpickler error:\s*", "", line)[:200]
    return type(error).__name__


def load_weights_only(path: Path, *, what: str, corrupt: CorruptError, objects_fix: str,
                      map_location: MapLocation = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; failures become :class:`InputError`.

    A file holding pickled Python objects (a whole model, NumPy arrays, or code: anything but
    tensors and plain values) raises an error that names the object, says it is never unpickled,
    and gives ``objects_fix`` (what to save instead); ``what`` names the file (``"model file"``).
    Other failures raise ``corrupt(why)``.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, OSError... for bad files
        name = pickled_global(e)
        if name is not None:
            raise InputError(f"{what} {path} holds pickled Python objects ({name}), which are never unpickled here "
                             f"because unpickling can run arbitrary code: {objects_fix}") from e
        if isinstance(e, pickle.UnpicklingError):  # torch's safe unpickler refused an instruction
            raise corrupt(f"not a file of tensors: the safe loader refused it ({_reason(e)}), and it is never "
                          "unpickled otherwise") from e
        raise corrupt(_reason(e)) from e


def read_torch_file(path: Path, *, what: str, corrupt: CorruptError, objects_fix: str,
                    map_location: MapLocation = "cpu") -> Any:
    """:func:`verify_torch_file`, then :func:`load_weights_only`."""
    verify_torch_file(path, corrupt)
    return load_weights_only(path, what=what, corrupt=corrupt, objects_fix=objects_fix, map_location=map_location)


def hash_tensor(digest: Any, prefix: list[str], name: str, tensor: Tensor) -> None:
    """Feed one tensor into a ``hashlib`` ``digest``: a JSON header line (``prefix``, name, dtype,
    shape, byte count), then its raw bytes. The one tensor hash behind the weights' SHA-256 and the
    evaluation state's model fingerprint."""
    data = _tensor_bytes(name, tensor)
    digest.update(json.dumps([*prefix, name, str(tensor.dtype), list(tensor.shape), data.nbytes]).encode() + b"\n")
    digest.update(data)


def _tensor_bytes(name: str, tensor: Tensor) -> memoryview:
    """The values of ``tensor`` as raw bytes on the CPU (no copy for a contiguous CPU tensor)."""
    if isinstance(tensor, nn.parameter.UninitializedTensorMixin):
        raise InputError(f"the model's {name} is not initialized yet (a lazy module): run one forward pass first")
    t = tensor.detach()
    if t.is_meta:
        raise InputError(f"the model's {name} is on the meta device (no values): load its weights first")
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


def weights_sha256(weights: Mapping[str, Any] | nn.Module) -> str:
    """SHA-256 (hex) of a state dict (or a module's): every tensor's name, dtype, shape and bytes,
    in the sorted order of the names.

    The same weights give the same hash from a file or in memory, on any device; one changed
    value gives another. Non-tensor entries (a state dict's ``_metadata``) are not covered.
    """
    state = weights.state_dict() if isinstance(weights, nn.Module) else weights
    digest = hashlib.sha256(b"robustness-weights-sha256 1\n")
    for name in sorted(k for k, v in state.items() if isinstance(v, Tensor)):
        hash_tensor(digest, [], name, state[name])
    return digest.hexdigest()
