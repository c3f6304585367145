"""Named attack lists, usable anywhere a list of attacks is accepted (``attacks="standard"``).

* ``standard``: APGD with cross-entropy, APGD with the targeted DLR loss, and the black-box
  Square attack, with the reference settings of Croce and Hein 2020 (AutoAttack's "standard"
  version without FAB): 100 steps, 9 target classes, 5,000 queries.
* ``smoke``: a fast list for CI: FGSM and a 10-step PGD. Cheap, not a robustness claim.

In L1, ``standard`` is AutoAttack's L1 protocol without FAB and Square (Croce and Hein 2021): APGD
with cross-entropy and 5 restarts and APGD-T with 5 target classes, both 100 steps with the
large-epsilon schedule (on by default for L1); our Square has no L1 mode.

A preset expands to ``(registry name, settings)`` pairs built for the sweep's norm.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NORM_PRESETS", "PRESETS", "preset_entries"]

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


#: norm -> preset name -> the preset's attacks in that norm, where they differ from :data:`PRESETS`
NORM_PRESETS: dict[str, dict[str, tuple[tuple[str, dict[str, Any]], ...]]] = {
    "l1": {
        "standard": (
            ("apgd-ce", {"steps": 100, "restarts": 5}),
            ("apgd-t", {"steps": 100, "target_classes": 5}),
        ),
    },
}


def preset_entries(name: str, norm: str | None = None) -> tuple[tuple[str, dict[str, Any]], ...] | None:
    """The attacks of preset ``name`` (case-insensitive) in ``norm`` (:data:`NORM_PRESETS`, else
    :data:`PRESETS`), or ``None`` if it is not a preset."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    return NORM_PRESETS.get(norm or "", {}).get(key, PRESETS.get(key))
