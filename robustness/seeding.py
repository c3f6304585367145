"""One seeding scheme: every seed the harness uses is derived from the user's seed by :func:`derive_seed`.

A run takes one seed (``evaluate(seed=...)``, ``--seed``, ``AdversarialTrainer(seed=...)``,
``--robustness-seed``). Each random draw inside it gets its own generator, seeded by
``derive_seed(seed, purpose, *index)``: the purpose names the use (a string from
:data:`PURPOSES`), the index locates it (a batch's first example, an attack's position, a budget,
a rank, an epoch, a test id). The derivation is NumPy's ``SeedSequence`` over the seed, a stable
hash of the purpose and the index, so that

* two uses never share a stream by accident (another purpose or index gives an unrelated seed);
* a draw depends only on what locates it, never on what ran before: a batch evaluated alone, on
  another rank or after a resume draws what it draws in one uninterrupted run;
* the numbers are the same on every machine, process and Python run (no ``hash()``, which is salted).

Example::

    from robustness.seeding import derive_seed
    gen = torch.Generator().manual_seed(derive_seed(0, "attack", 256, 1))  # batch at 256, 2nd attack
"""

from __future__ import annotations

import hashlib

import numpy as np

from robustness.errors import InputError

__all__ = ["MAX_SEED", "PURPOSES", "derive_seed", "validate_seed"]

MAX_SEED = 2**63  #: seeds lie in ``[0, MAX_SEED)``: a torch generator takes them as they are

#: every purpose a seed is derived for, and where it is used
PURPOSES: dict[str, str] = {
    "attack": "one attack on one range of examples (index: the range's first example, the attack's position)",
    "budget": "one budget of a sweep (index: the budget's position; bisection also the round)",
    "random-modules": "randomized defenses during the sweep (index: the range's first example)",
    "random-module": "one randomized module (index: its position among them), from a random-modules or checks seed",
    "checks": "the sanity checks as a whole: their own seed, and the randomized defenses while they run",
    "check": "one sanity check (index: the check's position), from the checks' seed",
    "train-rank": "one rank's random starts and augmentation in adversarial training (index: the rank)",
    "train-eval": "the evaluation after one training epoch (index: the epoch)",
    "pytest-test": "one robustness test under the pytest plugin (index: the test's node id)",
}


def validate_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as a plain ``int`` in ``[0, 2**63)``; anything else is an :class:`InputError`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"{what} must be an integer, got {seed!r}")
    if not 0 <= int(seed) < MAX_SEED:
        raise InputError(f"{what} must lie in [0, 2**63), got {seed}: use a non-negative integer")
    return int(seed)


def _word(part: int | str) -> int:
    if isinstance(part, str):  # a stable 64-bit number for a name or a test id
        return int.from_bytes(hashlib.sha256(part.encode()).digest()[:8], "big")
    if isinstance(part, bool) or not isinstance(part, (int, np.integer)) or part < 0:
        raise ValueError(f"a seed index is a non-negative integer or a string, got {part!r}")
    return int(part)


def derive_seed(seed: int, purpose: str, *index: int | str, bits: int = 63) -> int:
    """The seed, in ``[0, 2**bits)``, of the draw ``purpose`` at ``index`` in a run seeded with ``seed``.

    ``bits`` (1 to 63) narrows the range for consumers that need it (``numpy.random.seed`` takes
    32-bit seeds); the narrower seed is the top bits of the wider one."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}: add it to robustness.seeding.PURPOSES")
    if not 1 <= bits <= 63:
        raise ValueError(f"bits must lie in 1..63, got {bits}")
    words = [validate_seed(seed), _word(purpose), *(_word(p) for p in index)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> (64 - bits))
