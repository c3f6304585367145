"""One seeding scheme: every seed is derive_seed(seed, purpose, *index), and nothing else derives seeds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import robustness
from robustness.errors import InputError
from robustness.seeding import MAX_SEED, PURPOSES, derive_seed, validate_seed

ROOT = Path(__file__).resolve().parents[2]


@given(st.integers(0, MAX_SEED - 1), st.sampled_from(sorted(PURPOSES)),
       st.lists(st.integers(0, 2**40) | st.text(max_size=20), max_size=3), st.integers(1, 63))
def test_derived_seeds_are_stable_in_range_and_narrow_by_top_bits(seed, purpose, index, bits) -> None:
    wide = derive_seed(seed, purpose, *index)
    assert wide == derive_seed(seed, purpose, *index)
    assert 0 <= wide < 2**63
    assert derive_seed(seed, purpose, *index, bits=bits) == wide >> (63 - bits)


def test_purposes_and_indices_give_unrelated_streams() -> None:
    seeds = {derive_seed(0, p, i) for p in PURPOSES for i in range(50)}
    seeds |= {derive_seed(s, "attack", 0, 0) for s in range(1, 50)}
    assert len(seeds) == len(PURPOSES) * 50 + 49
    # a string index and the integer of its position never coincide
    assert derive_seed(0, "pytest-test", "0") != derive_seed(0, "pytest-test", 0)


def test_known_values_pin_the_derivation() -> None:
    # a change to the scheme changes every draw of every run: it must be deliberate (update the README)
    import numpy as np

    ss = np.random.SeedSequence([7, int.from_bytes(__import__("hashlib").sha256(b"attack").digest()[:8], "big"), 3, 1])
    assert derive_seed(7, "attack", 3, 1) == int(ss.generate_state(1, dtype=np.uint64)[0] >> 1)


@pytest.mark.parametrize("bad", [-1, MAX_SEED, 1.5, True, "3", None])
def test_bad_seeds_are_clear_errors(bad) -> None:
    with pytest.raises(InputError, match="seed must"):
        validate_seed(bad)


def test_unknown_purposes_and_bad_indices_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown seed purpose"):
        derive_seed(0, "atack", 1)
    with pytest.raises(ValueError, match="non-negative integer or a string"):
        derive_seed(0, "attack", -1)


def test_a_negative_seed_given_to_evaluate_is_an_input_error() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    data = (torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(InputError, match=r"seed must lie in \[0, 2\*\*63\)"):
        robustness.evaluate(model, data, attacks="fgsm", epsilons=[0.1], seed=-3, checks=False, progress=False)


def test_no_other_module_derives_seeds() -> None:
    """SeedSequence, seed arithmetic and hashed seeds appear only in robustness/seeding.py."""
    offenders = []
    pattern = re.compile(r"SeedSequence|seed\s*[*+%^]\s*\w|\w\s*[*+%^]\s*(self\.)?seed\b|sha256\([^)]*seed")
    for folder in ("robustness", "attacks", "defenses"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "seeding.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and "derive_seed" not in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
