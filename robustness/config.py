"""The settings of one evaluation: :class:`EvalConfig`, validated once when it is built.

:func:`robustness.evaluate` takes them as keywords (``evaluate(model, data, attacks=..., epsilons=...)``)
or as one object (``evaluate(model, data, config)``, keywords on top replacing its fields). The CLI, the
pytest plugin and :mod:`robustness.testing` build one ``EvalConfig`` and pass it; the runner, the
evaluation state's fingerprint (:meth:`EvalConfig.fingerprint`) and the report read that object.

Example::

    config = robustness.EvalConfig(attacks=["fgsm", "pgd"], epsilons=[0, 0.1, 0.2], seed=3)
    report = robustness.evaluate(model, (x, y), config)
    l2 = robustness.evaluate(model, (x, y), config, norm="l2", epsilons=[0, 0.5, 1])
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

from robustness.acceleration import check_amp
from robustness.attacks.base import Attack
from robustness.attacks.presets import PRESETS, preset_entries
from robustness.defenses.preprocessing import check_gradient_mode
from robustness.errors import InputError
from robustness.norms import check_bounds, check_norm
from robustness.registry import ATTACKS
from robustness.specs import parse_spec
from robustness.sweep import SCHEDULES
from robustness.seeding import validate_seed
from robustness.validation import check_batch_size, check_epsilons, check_flag

__all__ = ["AttackLike", "EvalConfig", "SETTINGS", "make_config", "resolve_attacks"]

AttackLike = Union[str, Attack]
#: the settings :func:`robustness.evaluate` cannot do without when it is given no config
REQUIRED = ("attacks", "epsilons")


def _did_you_mean(word: str, choices: Sequence[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'pgd'?)`` for the choice closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Everything :func:`robustness.evaluate` takes besides the model and the data.

    Built once, validated once (:class:`~robustness.errors.InputError` with what to do), then
    read by the runner, the evaluation state and the report. Values are normalized: ``epsilons``
    sorted and de-duplicated floats, ``norm`` and ``gradient_mode`` lower case, ``device`` a
    ``torch.device`` (or ``None``), ``state`` a ``Path`` (or ``None``). ``attacks`` keeps what was
    given (objects, registry names, specs, presets); :attr:`named_attacks` holds them built for
    ``norm``. ``dataclasses.replace(config, norm="l2")`` builds and validates a new one.

    The meaning of every field is in :func:`robustness.evaluate`'s docstring.
    """

    attacks: tuple[AttackLike, ...]
    epsilons: tuple[float, ...]
    norm: str = "linf"
    bounds: tuple[float, float] = (0.0, 1.0)
    batch_size: int | None = None
    device: torch.device | None = None
    seed: int = 0
    progress: bool = True
    gradient_mode: str | None = "adaptive"
    checks: bool = True
    strict: bool = False
    schedule: str = "ascending"
    state: Path | None = None
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    distributed: bool | None = None
    _named: tuple[tuple[str, Attack], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # a frozen dataclass normalizes its own fields through object.__setattr__ (the dataclasses idiom)
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("norm", check_norm(self.norm))
        put("bounds", check_bounds(self.bounds))
        put("epsilons", tuple(check_epsilons(self.epsilons)))
        put("seed", validate_seed(self.seed))
        put("gradient_mode", None if self.gradient_mode is None else check_gradient_mode(self.gradient_mode))
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        put("attacks", _attack_tuple(self.attacks))
        put("_named", tuple(resolve_attacks(self.attacks, self.norm).items()))
        if self.device is not None:
            put("device", torch.device(self.device))
            if self.device.type == "cuda" and not torch.cuda.is_available():
                raise InputError(f"device {self.device} was requested but CUDA is not available: use device='cpu'")
        if self.batch_size is not None:
            put("batch_size", check_batch_size(self.batch_size))
        if self.state is not None:
            put("state", Path(self.state))
        put("amp", check_amp(self.amp))
        put("channels_last", check_flag("channels_last", self.channels_last))
        put("compile", check_flag("compile", self.compile))

    @property
    def named_attacks(self) -> dict[str, Attack]:
        """The attacks built for :attr:`norm`, keyed by the unique names the report uses, in order."""
        return dict(self._named)

    @property
    def budgets(self) -> list[float]:
        """The budgets the attacks run at: :attr:`epsilons` above 0."""
        return [e for e in self.epsilons if e > 0]

    def attack_descriptions(self) -> dict[str, str]:
        """Each attack's report name and settings (``Report.attacks``)."""
        return {name: attack.describe() for name, attack in self._named}

    def speedups(self) -> dict[str, Any]:
        """The acceleration options in force (``Report.speedups``)."""
        return {"amp": self.amp, "channels_last": self.channels_last, "compile": self.compile}

    def fingerprint(self, batch_size: int) -> dict[str, Any]:
        """The settings a resumable evaluation state records (:mod:`robustness.state`), with the batch
        size the run uses: plain JSON values. A state written with other settings does not resume."""
        return {"norm": self.norm, "bounds": list(self.bounds), "attacks": self.attack_descriptions(),
                "seed": self.seed, "epsilons": list(self.epsilons), "schedule": self.schedule,
                "gradient_mode": self.gradient_mode, "amp": self.amp, "batch_size": batch_size}


SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EvalConfig) if f.init)


def make_config(config: EvalConfig | None, settings: Mapping[str, Any], *, caller: str = "evaluate") -> EvalConfig:
    """``config`` with ``settings`` on top, or (``config=None``) an :class:`EvalConfig` of ``settings``.

    ``caller`` names the function in the errors: an unknown setting is a ``TypeError`` that
    suggests the closest one, and without a config ``attacks`` and ``epsilons`` are required.
    """
    unknown = [k for k in settings if k not in SETTINGS]
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}"
                        f"{_did_you_mean(unknown[0], SETTINGS, cutoff=0.5)}")
    if config is None:
        missing = [k for k in REQUIRED if k not in settings]
        if missing:
            s = "s" if len(missing) > 1 else ""
            raise TypeError(f"{caller}() missing {len(missing)} required keyword-only argument{s}: "
                            f"{' and '.join(map(repr, missing))}")
        return EvalConfig(**settings)
    if not isinstance(config, EvalConfig):
        raise InputError(f"config must be a robustness.EvalConfig, got {type(config).__name__}: pass the settings "
                         f"as keywords or build one with robustness.EvalConfig(attacks=..., epsilons=...)")
    return dataclasses.replace(config, **settings) if settings else config


def _attack_tuple(attacks: Any) -> tuple[AttackLike, ...]:
    if isinstance(attacks, (str, Attack)):
        return (attacks,)
    try:
        return tuple(attacks)
    except TypeError:
        raise InputError(f"attacks must be Attack objects or registry names, got {type(attacks).__name__}") from None


def resolve_attacks(attacks: Sequence[AttackLike] | AttackLike, norm: str) -> dict[str, Attack]:
    """Attack objects keyed by unique report names; registry names are built for ``norm``.

    A string that names a preset (:data:`robustness.attacks.presets.PRESETS`: ``"standard"``, ``"smoke"``)
    expands, in place, to the preset's attacks.
    """
    if isinstance(attacks, (str, Attack)):
        attacks = [attacks]
    if not attacks:
        raise InputError("no attacks given: pass attack objects, registry names such as 'pgd' or a preset")
    items: list[tuple[AttackLike, dict[str, Any]]] = []
    for item in attacks:
        entries = preset_entries(item, norm) if isinstance(item, str) else None
        if entries is not None and item.strip().lower() in ATTACKS:
            raise InputError(f"{item!r} is both a preset and a registered attack name: rename the attack")
        items += [(n, dict(kw)) for n, kw in entries] if entries is not None else [(item, {})]
    resolved: dict[str, Attack] = {}
    for item, settings in items:
        if isinstance(item, str) and item.strip().lower().startswith("art:"):
            from robustness.attacks.art_adapter import from_spec  # ART is imported only when asked for

            attack = from_spec(item.strip()[4:], norm=norm)
            label = attack.label
        elif isinstance(item, str):
            name, given = parse_spec(item.strip())
            name = name.lower()  # names are case-insensitive, settings (True, strings) are not
            overlap = sorted(set(given) & {"norm"})
            if overlap:
                raise InputError(f"attack {item!r}: the sweep sets {overlap[0]}: drop it from the settings")
            if name not in ATTACKS:
                raise InputError(
                    f"unknown attack {name!r}{_did_you_mean(name, [*ATTACKS.list(), *PRESETS])}: known attacks are "
                    f"{', '.join(ATTACKS.list())}; presets {', '.join(sorted(PRESETS))}; any ART evasion attack "
                    f"as art:Name(setting=value)"
                )
            try:
                attack = ATTACKS.create(name, norm=norm, **{**settings, **given})
            except TypeError as err:  # an unknown setting: the dataclass constructor names it
                cls = ATTACKS.load(name)
                fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
                hint = "".join(_did_you_mean(k, fields) for k in given if k not in fields)
                raise InputError(f"attack {item!r}: {err}{hint}; see `robustness list attacks` and the attack's "
                                 f"docstring for its settings") from None
            label = name if not given else name + "(" + item.strip().partition("(")[2].replace(" ", "")
        elif isinstance(item, Attack):
            attack = item
            label = item.label
        else:
            raise InputError(f"attacks must be Attack objects or registry names, got {type(item).__name__}")
        if attack.norm != norm:
            raise InputError(
                f"attack {label!r} works in the {attack.norm} norm but the sweep is {norm}: "
                f"build it with norm={norm!r} or drop it"
            )
        base, k = label, 2
        while label in resolved:
            label, k = f"{base}-{k}", k + 1
        resolved[label] = attack
    return resolved
