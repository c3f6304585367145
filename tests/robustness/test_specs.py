"""Attack specs as text (robustness/specs.py), and registry attacks built from them by the runner."""

from __future__ import annotations

import keyword

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustness.attacks import APGD, PGD
from robustness.errors import InputError
from robustness.runner import resolve_attacks
from robustness.specs import parse_spec


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("pgd", ("pgd", {})),
        ("  apgd-ce  ", ("apgd-ce", {})),
        ("apgd-ce(steps=200, restarts=3)", ("apgd-ce", {"steps": 200, "restarts": 3})),
        ("pgd(loss='margin', rel_stepsize=0.05, random_start=False)",
         ("pgd", {"loss": "margin", "rel_stepsize": 0.05, "random_start": False})),
        ("x(a=(1, 2), b=None, c=-3e-2)", ("x", {"a": (1, 2), "b": None, "c": -0.03})),
        ("pgd()", ("pgd", {})),
    ],
)
def test_parses_names_and_literal_settings(spec, expected) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("pgd(steps=3", "end with"),
        ("pgd(3)", "named"),
        ("pgd(steps=3, steps=4)", "twice"),
        ("pgd(steps=os.sep)", "must be numbers"),
        ("pgd(**{'steps': 3})", r"'\*\*'"),
        ("(steps=3)", "cannot read"),
        ("pgd x(steps=3)", "cannot read"),
        ("pgd(steps=3))", "cannot read"),
    ],
)
def test_bad_specs_say_how_to_write_them(spec, message) -> None:
    with pytest.raises(InputError, match=message) as err:
        parse_spec(spec)
    assert "NAME(key=value" in str(err.value) or "twice" in str(err.value) or "must be" in str(err.value)


@given(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True).filter(lambda k: not keyword.iskeyword(k)),
                       st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(),
                                 st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5)),
                       max_size=4))
def test_round_trip(settings) -> None:
    text = "apgd-ce(" + ", ".join(f"{k}={v!r}" for k, v in settings.items()) + ")"
    assert parse_spec(text) == ("apgd-ce", settings)


def test_registry_attacks_take_settings_from_text() -> None:
    resolved = resolve_attacks(["pgd", "apgd-ce(steps=20, restarts=2)", "pgd(loss='margin')"], "l2")
    assert resolved["pgd"] == PGD(norm="l2")
    assert resolved["apgd-ce(steps=20,restarts=2)"] == APGD(norm="l2", steps=20, restarts=2)
    assert resolved["pgd(loss='margin')"] == PGD(norm="l2", loss="margin")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("pgd(stepz=3)", "stepz"),
        ("pgd(norm='l2')", "sets norm"),
        ("pgd(steps=0)", "steps"),
    ],
)
def test_bad_settings_of_registry_attacks_are_clear_errors(spec, message) -> None:
    with pytest.raises(InputError, match=message):
        resolve_attacks([spec], "linf")


@given(st.lists(st.tuples(st.sampled_from(["pgd", "PGD", "Apgd-CE", "fgsm"]),
                          st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True)
                                          .filter(lambda k: not keyword.iskeyword(k)),
                                          st.one_of(st.booleans(), st.none(), st.text("(),'\"\\ aZ", max_size=6)),
                                          max_size=3)),
                min_size=1, max_size=3))
def test_attack_lists_split_on_top_level_commas_and_keep_the_settings_as_written(entries) -> None:
    """Only the names are lower-cased; True/None and strings holding '(', ')', ',' or quotes survive."""
    from robustness.cli import split_attack_list

    specs = [name + "(" + ", ".join(f"{k}={v!r}" for k, v in settings.items()) + ")" for name, settings in entries]
    parts = split_attack_list(",".join(specs))
    assert [parse_spec(p) for p in parts] == [(name.lower(), settings) for name, settings in entries]
    assert all(p.partition("(")[2] == s.partition("(")[2] for p, s in zip(parts, specs))
