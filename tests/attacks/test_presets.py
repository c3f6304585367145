"""Presets (attacks/presets.py): named attack lists, usable wherever an attack list is."""

from __future__ import annotations

import pytest

from robustness.attacks import APGD, APGDT, FGSM, PGD, Square
from robustness.attacks.presets import PRESETS, preset_entries
from robustness.errors import InputError
from robustness.registry import ATTACKS
from robustness.runner import resolve_attacks


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_standard_is_apgd_ce_apgd_t_and_square_with_the_reference_settings(norm) -> None:
    resolved = resolve_attacks("standard", norm)
    assert list(resolved) == ["apgd-ce", "apgd-t", "square"]
    assert resolved["apgd-ce"] == APGD(norm=norm, steps=100, restarts=1)
    assert resolved["apgd-t"] == APGDT(norm=norm, steps=100, target_classes=9)
    assert resolved["square"] == Square(norm=norm, queries=5000)


def test_smoke_is_fgsm_and_a_ten_step_pgd_and_presets_mix_with_other_entries() -> None:
    resolved = resolve_attacks(["cw", "SMOKE"], "l2")
    assert list(resolved) == ["cw", "fgsm", "pgd"]
    assert resolved["fgsm"] == FGSM(norm="l2") and resolved["pgd"] == PGD(norm="l2", steps=10)


def test_every_preset_names_registered_attacks_and_none_shadows_an_attack() -> None:
    for name, entries in PRESETS.items():
        assert name not in ATTACKS
        assert all(attack in ATTACKS for attack, _ in entries)
    assert preset_entries("pgd") is None and preset_entries("Standard") == PRESETS["standard"]


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


def test_a_preset_that_shadows_an_attack_is_an_error(monkeypatch) -> None:
    monkeypatch.setitem(PRESETS, "pgd", (("fgsm", {}),))
    with pytest.raises(InputError, match="both a preset and a registered attack"):
        resolve_attacks("pgd", "linf")
