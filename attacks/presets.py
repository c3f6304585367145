"""Named attack lists, usable anywhere a list of attacks is accepted (``attacks="standard"``).

* ``standard``: APGD with cross-entropy, APGD with the targeted DLR loss, and the black-box
  Square attack, with the reference settings of Croce and Hein 2020 (AutoAttack's "standard"
  version without FAB): 100 steps, 9 target classes, 5,000 queries.
* ``smoke``: a fast list for CI: FGSM and a 10-step PGD. Cheap, not a robustness claim.

A preset expands to ``(registry name, settings)`` pairs built for the sweep's norm.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "preset_entries"]

#: preset name -> ordered (registry name, settings) pairs; the norm is added when built
PRESETS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "standard": (
        ("apgd-ce", {"steps": 100, "restarts": 1}),
        ("apgd-t", {"steps": 100, "target_classes": 9}),
        ("square", {"queries": 5000}),
    ),
    "smoke": (
        ("fgsm", {}),
        ("pgd", {"steps": 10}),
    ),
}


def preset_entries(name: str) -> tuple[tuple[str, dict[str, Any]], ...] | None:
    """The attacks of preset ``name`` (case-insensitive), or ``None`` if it is not a preset."""
    return PRESETS.get(name.strip().lower()) if isinstance(name, str) else None
