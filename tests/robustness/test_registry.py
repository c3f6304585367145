from __future__ import annotations

import pytest

from robustness.attacks import FGSM, PGD, CarliniWagnerL2
from robustness.errors import InputError
from robustness.registry import ATTACKS, Registry


def test_builtins_register_through_entry_points() -> None:
    assert {"fgsm", "pgd", "cw"} <= set(ATTACKS.list())
    assert ATTACKS.load("pgd") is PGD and ATTACKS.load("fgsm") is FGSM and ATTACKS.load("cw") is CarliniWagnerL2
    assert ATTACKS.list("p*") == ["pgd"]


def test_create_passes_settings() -> None:
    attack = ATTACKS.create("pgd", steps=7, norm="l2")
    assert isinstance(attack, PGD) and attack.steps == 7 and attack.norm == "l2"


def test_duplicate_and_bad_names_are_errors() -> None:
    reg: Registry[object] = Registry("robustness.tests.none", "thing")
    reg.register("one", dict)
    with pytest.raises(InputError, match="already registered"):
        reg.register("one", list)
    with pytest.raises(InputError, match="lowercase"):
        reg.register("Bad Name", list)
    with pytest.raises(InputError, match="unknown thing 'two'"):
        reg.create("two")


def test_registries_are_independent() -> None:
    a: Registry[object] = Registry("robustness.tests.none", "thing")
    b: Registry[object] = Registry("robustness.tests.none", "thing")
    a.register("x", dict)
    assert "x" in a and "x" not in b
