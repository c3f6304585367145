"""Importing ``robustbench`` 1.1.1 where its two undeclared imports need help: ``autoattack`` and ``pkg_resources``.

RobustBench imports, at package import, ``autoattack`` (``robustbench/eval.py``: ``from autoattack import
AutoAttack`` and ``from autoattack.state import EvaluationState``): its users install that module from the
AutoAttack repository, and the package index carries the same code only as ``pyautoattack`` (module
``pyautoattack``). When ``autoattack`` is missing and ``pyautoattack`` is importable,
:func:`alias_autoattack` registers ``autoattack`` and every loaded ``autoattack.<sub>`` module in
``sys.modules`` as the ``pyautoattack`` modules themselves (logged at INFO), so RobustBench's imports find
them; a real ``autoattack`` is never replaced. RobustBench also imports ``pkg_resources``, which setuptools
dropped in version 81: the ``zoo`` extra pins ``setuptools<81``.

Every missing piece is one :class:`~robustness.errors.InputError` line saying what to install.

Example::

    rb = import_robustbench()
    rb.utils.load_model(model_name="Wong2020Fast", model_dir="./models", dataset="cifar10", threat_model="Linf")
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType

from robustness.errors import InputError

__all__ = ["RobustBench", "alias_autoattack", "import_robustbench"]

log = logging.getLogger(__name__)

_INSTALL = 'pip install -e ".[zoo]"'
_SETUPTOOLS = ('robustbench 1.1.1 imports pkg_resources, which setuptools removed in version 81: '
               'pip install "setuptools<81" (the zoo extra pins it)')


@dataclass(frozen=True)
class RobustBench:
    """The RobustBench modules the model source uses."""

    utils: ModuleType  # load_model, download_gdrive_new, DATASET_CLASSES
    model_zoo: ModuleType  # model_dicts
    enums: ModuleType  # BenchmarkDataset, ThreatModel
    data: ModuleType  # PREPROCESSINGS


def _importable(name: str) -> bool:
    """Whether ``import name`` can succeed, without importing it (``None`` in sys.modules blocks an import)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def alias_autoattack() -> bool:
    """Make ``import autoattack`` (and ``autoattack.state`` ...) give ``pyautoattack``'s modules when no
    ``autoattack`` is installed. Returns ``True`` when it registered the alias, ``False`` when a real
    ``autoattack`` (or an alias made earlier) is there. Raises :class:`InputError` when neither is.
    """
    if _importable("autoattack"):
        return False
    if not _importable("pyautoattack"):
        raise InputError("robustbench imports the autoattack module, which is not installed, and pyautoattack (the "
                         f"package index's copy of it) is not either: pip install \"pyautoattack>=0.2,<0.3\" ({_INSTALL})")
    try:
        base = importlib.import_module("pyautoattack")  # imports autoattack, autopgd_base, fab_pt, square, state...
    except ImportError as e:
        raise InputError(f"pyautoattack (robustbench's autoattack) could not be imported ({e}): reinstall it, "
                         f'pip install "pyautoattack>=0.2,<0.3"') from e
    loaded = sorted(n for n in list(sys.modules) if n.startswith("pyautoattack.") and sys.modules[n] is not None)
    sys.modules["autoattack"] = base
    for name in loaded:
        sys.modules["autoattack" + name[len("pyautoattack"):]] = sys.modules[name]
    log.info("robustbench imports the 'autoattack' module, which is not installed: using pyautoattack %s (the "
             "package index's copy of the reference AutoAttack) under that name (autoattack and %d submodules)",
             getattr(base, "__version__", "?"), len(loaded))
    return True


def import_robustbench() -> RobustBench:
    """Import robustbench 1.1.1 (see the module docstring); :class:`InputError` when something is missing."""
    if not _importable("robustbench"):
        raise InputError(f"robustbench: models need the robustbench package, which is not installed: {_INSTALL}")
    if not _importable("pkg_resources"):
        raise InputError(_SETUPTOOLS)
    alias_autoattack()
    try:
        with warnings.catch_warnings():
            # robustbench.loaders imports pkg_resources, whose import warns that it is deprecated: the zoo extra
            # pins setuptools<81 for exactly this, so the warning says nothing the user can act on
            warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
            # and robustbench's model zoo imports timm and torch modules by their deprecated names
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            modules = [importlib.import_module(f"robustbench.{m}")
                       for m in ("utils", "model_zoo", "model_zoo.enums", "data")]
    except ModuleNotFoundError as e:
        if e.name == "pkg_resources":
            raise InputError(_SETUPTOOLS) from e
        raise InputError(f"robustbench could not be imported: it needs the module {e.name!r}, which is missing "
                         f"({_INSTALL})") from e
    return RobustBench(*modules)
