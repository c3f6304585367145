"""Named attack lists, usable anywhere a list of attacks is accepted (``attacks="standard"``).

The presets named after AutoAttack's versions (Croce and Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks"; reference code
``autoattack.py``, ``AutoAttack._set_version``) carry its settings per norm and its behaviours:
APGD starts on the surface of the ball and halves its step with the reference's test
(``start="surface", halving="reference"``), Square keeps the 10,000-query ``p`` schedule
(``resc_schedule=False``). They run cascaded by default (each attack only on the samples the
earlier ones left robust, as the reference does; ``EvalConfig.cascade`` overrides it).

============== ===== ==============================================================================
preset         norm  attacks, in order
============== ===== ==============================================================================
standard       linf, APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 target classes, 1 restart),
               l2    FAB-T (100 steps, 9 target classes, 1 restart), Square (5,000 queries, p_init 0.8)
standard       l1    APGD-CE (100 steps, 5 restarts, large-epsilon schedule), APGD-T (100 steps,
                     5 target classes, large-epsilon schedule), FAB-T (100 steps, 9 target classes),
                     Square in L1 (5,000 queries, p_init 0.8), as the reference
plus           linf, APGD-CE (5 restarts), APGD-DLR (5 restarts), FAB (5 restarts), Square (5,000
               l2    queries), APGD-T (9 target classes), FAB-T (9 target classes); 100 steps each
rand           linf, APGD-CE and APGD-DLR, 100 steps, 1 restart, EOT over 20 forward passes
               l2    (``eot_samples=20``), for randomized models
standard-nofab all   ``standard`` without FAB-T: the three attacks the old ``standard`` preset ran,
                     now with the reference's behaviours; cheaper where FAB-T changes nothing
smoke          all   FGSM and a 10-step PGD: fast, for CI, not a robustness claim; not cascaded
============== ===== ==============================================================================

A preset expands to ``(registry name, settings)`` pairs; the norm is added when they are built.

Example::

    from robustness.attacks.presets import preset_entries
    preset_entries("standard", "l2")   # (("apgd-ce", {...}), ("apgd-t", {...}), ("fab-t", {...}), ("square", {...}))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from robustness.errors import InputError

__all__ = ["PRESETS", "Entries", "Preset", "preset_cascades", "preset_entries"]

#: ordered ``(registry name, settings)`` pairs
Entries = tuple[tuple[str, dict[str, Any]], ...]

#: what the reference's APGD does where ours differs (attacks/apgd.py)
_REFERENCE_APGD: dict[str, Any] = {"steps": 100, "start": "surface", "halving": "reference"}
#: Square as the reference's AutoAttack builds it (attacks/square.py)
_REFERENCE_SQUARE: dict[str, Any] = {"queries": 5000, "p_init": 0.8, "restarts": 1, "resc_schedule": False}
#: L1 APGD as the reference's standard version runs it: the large-epsilon schedule (3, 2, 1 times eps)
_L1_APGD: dict[str, Any] = {"steps": 100, "large_eps": True, "l1_coordinates": "all"}  # the reference's


@dataclass(frozen=True)
class Preset:
    """A named attack list: its entries per norm (``"*"``: every norm) and whether it cascades by default."""

    description: str
    by_norm: Mapping[str, Entries] = field(default_factory=dict)
    cascade: bool = False

    def entries(self, name: str, norm: str) -> Entries:
        """The attacks for ``norm``; :class:`InputError` naming the norms it has when it has none for it."""
        found = self.by_norm.get(norm, self.by_norm.get("*"))
        if found is None:
            raise InputError(f"preset {name!r} is defined for {', '.join(sorted(self.by_norm))} only, not for "
                             f"norm={norm!r}: use another norm or list the attacks yourself")
        return found


def _standard(fab: bool) -> dict[str, Entries]:
    linf_l2: Entries = (
        ("apgd-ce", {**_REFERENCE_APGD, "restarts": 1}),
        ("apgd-t", {**_REFERENCE_APGD, "restarts": 1, "target_classes": 9}),
        *((("fab-t", {"steps": 100, "restarts": 1, "target_classes": 9}),) if fab else ()),
        ("square", dict(_REFERENCE_SQUARE)),
    )
    l1: Entries = (
        ("apgd-ce", {**_L1_APGD, "restarts": 5}),
        ("apgd-t", {**_L1_APGD, "restarts": 1, "target_classes": 5}),
        *((("fab-t", {"steps": 100, "restarts": 1, "target_classes": 9}),) if fab else ()),
        ("square", dict(_REFERENCE_SQUARE)),  # autoattack.py builds one Square for every norm
    )
    return {"linf": linf_l2, "l2": linf_l2, "l1": l1}


_PLUS: Entries = (
    ("apgd-ce", {**_REFERENCE_APGD, "restarts": 5}),
    ("apgd-dlr", {**_REFERENCE_APGD, "restarts": 5}),
    ("fab", {"steps": 100, "restarts": 5}),
    ("square", dict(_REFERENCE_SQUARE)),
    ("apgd-t", {**_REFERENCE_APGD, "restarts": 1, "target_classes": 9}),
    ("fab-t", {"steps": 100, "restarts": 1, "target_classes": 9}),
)
_RAND: Entries = (
    ("apgd-ce", {**_REFERENCE_APGD, "restarts": 1, "eot_samples": 20}),
    ("apgd-dlr", {**_REFERENCE_APGD, "restarts": 1, "eot_samples": 20}),
)

#: preset name -> :class:`Preset`
PRESETS: dict[str, Preset] = {
    "standard": Preset("AutoAttack's standard version: APGD-CE, APGD-T, FAB-T, Square",
                       _standard(fab=True), cascade=True),
    "plus": Preset("AutoAttack's plus version: APGD-CE, APGD-DLR, FAB, Square, APGD-T, FAB-T (5 restarts)",
                   {"linf": _PLUS, "l2": _PLUS}, cascade=True),
    "rand": Preset("AutoAttack's rand version, for randomized models: APGD-CE and APGD-DLR with EOT over 20 draws",
                   {"linf": _RAND, "l2": _RAND}, cascade=True),
    "standard-nofab": Preset("standard without FAB-T: APGD-CE, APGD-T, Square (the old standard list)",
                             _standard(fab=False), cascade=True),
    "smoke": Preset("FGSM and PGD-10: fast, for CI, not a robustness claim",
                    {"*": (("fgsm", {}), ("pgd", {"steps": 10}))}, cascade=False),
}


def _key(name: object) -> str | None:
    return name.strip().lower() if isinstance(name, str) else None


def preset_entries(name: object, norm: str) -> Entries | None:
    """The attacks of preset ``name`` (case-insensitive) for ``norm``, or ``None`` if it is not a preset.

    A preset that has no list for ``norm`` (``plus`` in L1) raises :class:`InputError`.
    """
    key = _key(name)
    preset = PRESETS.get(key) if key is not None else None
    if preset is None:
        return None
    return tuple((attack, dict(settings)) for attack, settings in preset.entries(key, norm))  # type: ignore[arg-type]


def preset_cascades(name: object) -> bool | None:
    """Whether preset ``name`` runs cascaded by default, or ``None`` if it is not a preset."""
    key = _key(name)
    preset = PRESETS.get(key) if key is not None else None
    return None if preset is None else preset.cascade
