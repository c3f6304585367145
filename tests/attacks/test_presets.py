"""Presets (attacks/presets.py): named attack lists per norm, usable wherever an attack list is."""

from __future__ import annotations

import dataclasses

import pytest

from robustness.attacks import APGD, APGDT, FGSM, PGD, Square
from robustness.attacks.apgd import APGDDLR
from robustness.attacks.presets import PRESETS, preset_cascades, preset_entries
from robustness.config import EvalConfig
from robustness.errors import InputError
from robustness.registry import ATTACKS
from robustness.runner import resolve_attacks

#: the reference's APGD behaviours (autopgd_base.py) and its AutoAttack's Square (autoattack.py)
REF = {"start": "surface", "halving": "reference"}


def _linf_l2_entries(name: str, norm: str) -> dict[str, dict]:
    return {attack: settings for attack, settings in preset_entries(name, norm)}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_standard_has_the_reference_attacks_settings_and_order(norm) -> None:
    entries = preset_entries("standard", norm)
    assert [a for a, _ in entries] == ["apgd-ce", "apgd-t", "fab-t", "square"]  # autoattack.py's order
    got = dict(entries)
    assert got["apgd-ce"] == {"steps": 100, "restarts": 1, **REF}
    assert got["apgd-t"] == {"steps": 100, "restarts": 1, "target_classes": 9, **REF}
    assert got["fab-t"] == {"steps": 100, "restarts": 1, "target_classes": 9}
    assert got["square"] == {"queries": 5000, "p_init": 0.8, "restarts": 1, "resc_schedule": False}


def test_standard_l1_is_the_large_epsilon_apgd_with_5_restarts_and_5_targets_fab_t_and_square() -> None:
    got = dict(preset_entries("standard", "l1"))
    assert list(got) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    ref = {"large_eps": True, "l1_coordinates": "all"}  # the reference's schedule and coordinate choice
    assert got["apgd-ce"] == {"steps": 100, "restarts": 5, **ref}
    assert got["apgd-t"] == {"steps": 100, "restarts": 1, "target_classes": 5, **ref}
    assert got["fab-t"]["target_classes"] == 9  # autoattack.py sets fab.n_target_classes = 9 for every norm
    # autoattack.py builds Square with p_init 0.8 and resc_schedule=False for every norm, 5,000 queries
    assert got["square"] == {"queries": 5000, "p_init": 0.8, "restarts": 1, "resc_schedule": False}


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_plus_and_rand_have_the_reference_settings(norm) -> None:
    plus = preset_entries("plus", norm)
    assert [a for a, _ in plus] == ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
    got = dict(plus)
    assert got["apgd-ce"]["restarts"] == got["apgd-dlr"]["restarts"] == got["fab"]["restarts"] == 5
    assert got["apgd-t"]["restarts"] == got["fab-t"]["restarts"] == 1
    assert got["apgd-t"]["target_classes"] == got["fab-t"]["target_classes"] == 9
    rand = preset_entries("rand", norm)
    assert [a for a, _ in rand] == ["apgd-ce", "apgd-dlr"]
    assert all(s == {"steps": 100, "restarts": 1, "eot_samples": 20, **REF} for _, s in rand)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_fab_free_presets_build_with_the_reference_behaviours(norm) -> None:
    nofab = resolve_attacks("standard-nofab", norm)
    assert list(nofab) == ["apgd-ce", "apgd-t", "square"]  # the old standard list
    assert nofab["apgd-ce"] == APGD(norm=norm, steps=100, restarts=1, **REF)
    assert nofab["apgd-t"] == APGDT(norm=norm, steps=100, target_classes=9, **REF)
    assert nofab["square"] == Square(norm=norm, queries=5000, p_init=0.8, resc_schedule=False)
    rand = resolve_attacks("rand", norm)
    assert rand == {"apgd-ce": APGD(norm=norm, eot_samples=20, **REF), "apgd-dlr": APGDDLR(norm=norm, eot_samples=20,
                                                                                             **REF)}


@pytest.mark.parametrize("name", ["standard", "plus"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_fab_presets_build(name, norm) -> None:
    resolved = resolve_attacks(name, norm)
    assert list(resolved) == [a for a, _ in preset_entries(name, norm)]
    assert resolved["fab-t"].target_classes == 9 and resolved["fab-t"].steps == 100


def test_standard_l1_builds() -> None:
    resolved = resolve_attacks("standard", "l1")
    assert list(resolved) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert resolved["square"].norm == "l1" and resolved["square"].resc_schedule is False


def test_a_preset_without_a_list_for_the_norm_says_which_norms_it_has() -> None:
    with pytest.raises(InputError, match="preset 'plus' is defined for l2, linf only, not for norm='l1'"):
        preset_entries("plus", "l1")
    with pytest.raises(InputError, match="preset 'rand' is defined for"):
        EvalConfig(attacks="rand", epsilons=[0.1], norm="l1")


def test_smoke_is_fgsm_and_a_ten_step_pgd_and_presets_mix_with_other_entries() -> None:
    resolved = resolve_attacks(["cw", "SMOKE"], "l2")
    assert list(resolved) == ["cw", "fgsm", "pgd"]
    assert resolved["fgsm"] == FGSM(norm="l2") and resolved["pgd"] == PGD(norm="l2", steps=10)


def test_every_preset_names_registered_attacks_and_none_shadows_an_attack() -> None:
    for name, preset in PRESETS.items():
        assert name not in ATTACKS
        names = {attack for entries in preset.by_norm.values() for attack, _ in entries}
        assert names - {"fab", "fab-t"} <= set(ATTACKS.list())  # FAB comes from its own branch
    assert preset_entries("pgd", "linf") is None and preset_entries("Standard", "l2") == preset_entries("standard", "l2")
    entries = preset_entries("smoke", "linf")
    entries[1][1]["steps"] = 99  # a caller's edit does not reach the table
    assert preset_entries("smoke", "linf")[1][1]["steps"] == 10


def test_cascade_defaults_to_the_preset_and_is_overridable() -> None:
    assert [preset_cascades(n) for n in ("standard", "plus", "rand", "standard-nofab", "smoke", "pgd")] == [
        True, True, True, True, False, None]
    assert EvalConfig(attacks="standard-nofab", epsilons=[0.1]).cascades is True
    assert EvalConfig(attacks="standard-nofab", epsilons=[0.1], cascade=False).cascades is False
    assert EvalConfig(attacks="smoke", epsilons=[0.1]).cascades is False
    assert EvalConfig(attacks=["pgd", "fgsm"], epsilons=[0.1], cascade=True).cascades is True
    assert EvalConfig(attacks=["standard-nofab", "pgd"], epsilons=[0.1]).cascades is False  # not one preset
    with pytest.raises(InputError, match="cascade must be"):
        EvalConfig(attacks="pgd", epsilons=[0.1], cascade="yes")


def test_a_preset_through_the_cli_reaches_the_library(monkeypatch, tmp_path) -> None:
    from tests.robustness.test_cli import _fake_report

    from robustness import cli

    seen = {}

    def evaluate(model, data, config=None, **kw):
        seen["config"] = config
        return _fake_report(config.norm, worst=0.5)

    monkeypatch.setattr(cli.runner, "evaluate", evaluate)
    assert cli.main(["evaluate", "--attacks", "smoke,cw", "--norm", "l2", "--eps", "0,0.5", "--n", "8",
                     "--out", str(tmp_path), "--quiet"]) == 0
    assert list(seen["config"].attacks) == ["smoke", "cw"]
    assert list(resolve_attacks(seen["config"].attacks, "l2")) == ["fgsm", "pgd", "cw"]
    assert list(seen["config"].named_attacks) == ["fgsm", "pgd", "cw"]
    assert cli.main(["evaluate", "--attacks", "standard-nofab", "--eps", "0,0.1", "--n", "8", "--no-cascade",
                     "--out", str(tmp_path), "--quiet"]) == 0
    assert seen["config"].cascade is False and list(seen["config"].named_attacks) == ["apgd-ce", "apgd-t", "square"]


def test_a_preset_that_shadows_an_attack_is_an_error(monkeypatch) -> None:
    monkeypatch.setitem(PRESETS, "pgd", PRESETS["smoke"])
    with pytest.raises(InputError, match="both a preset and a registered attack"):
        resolve_attacks("pgd", "linf")
