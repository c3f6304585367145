"""The shrinker that drops fooled samples from an attack's working batch, eager and deferred.

The deferred mode is what CUDA uses (no host sync per step); on the CPU it is emulated with a
lag of exactly one step, which exercises the same bookkeeping: samples that ride along after
being fooled must change nothing but the cost.
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import robustness.attacks.apgd
import robustness.attacks.carlini_wagner
import robustness.attacks.pgd
import robustness.attacks.square
from robustness.attacks import PGD, CarliniWagnerL2, Square
from robustness.attacks.apgd import APGD
from robustness.attacks.early_stop import Shrinker

CPU = torch.device("cpu")


def test_eager_shrinks_at_once_and_only_when_something_is_done() -> None:
    shrink = Shrinker(CPU)
    assert not shrink.deferred
    assert shrink.update(torch.tensor([False, False, False])) is None
    keep = shrink.update(torch.tensor([False, True, False]))
    assert keep.tolist() == [0, 2]
    assert shrink.update(torch.tensor([True, True])).numel() == 0


def test_deferred_lags_one_step_and_keeps_the_order() -> None:
    shrink = Shrinker(CPU, deferred=True)
    assert shrink.update(torch.tensor([False, True, False, True])) is None  # proposed, not read yet
    keep = shrink.update(torch.tensor([False, True, True, True]))  # reads the previous proposal
    assert keep.tolist() == [0, 2]
    # the new proposal is this step's mask restricted to the kept samples: [False, True]
    assert shrink.update(torch.tensor([False, False])).tolist() == [0]


def test_deferred_reports_when_every_sample_is_done() -> None:
    shrink = Shrinker(CPU, deferred=True)
    shrink.update(torch.tensor([True, True]))
    keep = shrink.update(torch.tensor([True, True]))
    assert keep is not None and keep.numel() == 0


def test_cuda_defaults_to_deferred() -> None:
    assert Shrinker(torch.device("cuda")).deferred  # only decides; allocates nothing before update()


@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=8), st.booleans())
def test_never_drops_a_sample_that_is_not_done(steps: list[list[bool]], deferred: bool) -> None:
    """Feed cumulative done masks of six samples; the kept samples always include every sample
    not done yet, and a final pass of all-done drops them all."""
    shrink = Shrinker(CPU, deferred=deferred)
    done_ever = torch.zeros(6, dtype=torch.bool)
    alive = torch.arange(6)
    for row in steps + [[True] * 6]:
        done_ever |= torch.tensor(row)
        keep = shrink.update(done_ever[alive])
        if keep is not None:
            dropped = set(alive.tolist()) - set(alive[keep].tolist())
            assert all(bool(done_ever[i]) for i in dropped)
            alive = alive[keep]
    if alive.numel():  # deferred: the last all-done mask is read one step later
        keep = shrink.update(torch.ones(alive.numel(), dtype=torch.bool))
        assert keep is not None and keep.numel() == 0


def _deferred(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (robustness.attacks.pgd, robustness.attacks.apgd, robustness.attacks.square, robustness.attacks.carlini_wagner):
        monkeypatch.setattr(module, "Shrinker", functools.partial(Shrinker, deferred=True))


def _run_counting(model, attack, x, y, eps: float) -> tuple[torch.Tensor, int]:
    rows: list[int] = []
    hook = model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        out = attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    return out, sum(rows)


@pytest.mark.parametrize("attack, eps", [
    (PGD(norm="linf", steps=10, restarts=2), 0.15),
    (PGD(norm="l2", steps=10), 1.0),
    (APGD(norm="linf", steps=12), 0.15),
])
def test_riding_along_changes_the_cost_not_the_outcome(attack, eps, trained_model, test_batch, monkeypatch) -> None:
    """Gradient attacks draw no random numbers inside the loop, so with samples riding along
    one step longer the output is the same, at a higher cost."""
    x, y = test_batch
    eager, eager_rows = _run_counting(trained_model, attack, x, y, eps)
    _deferred(monkeypatch)
    late, late_rows = _run_counting(trained_model, attack, x, y, eps)
    with torch.no_grad():
        assert torch.equal(trained_model(eager).argmax(1) != y, trained_model(late).argmax(1) != y)
    torch.testing.assert_close(late, eager, rtol=0, atol=1e-5)
    assert late_rows > eager_rows


@pytest.mark.parametrize("norm, eps", [("linf", 0.15), ("l2", 1.0)])
def test_square_deferred_keeps_the_first_fooling_point(norm, eps, trained_model, test_batch, monkeypatch) -> None:
    """Square draws per query, so the lag changes its random stream: check what must hold
    anyway: inside the budget and bounds, and a fooled sample is returned fooled."""
    x, y = test_batch
    _deferred(monkeypatch)
    out, _ = _run_counting(trained_model, Square(norm=norm, queries=150), x, y, eps)
    delta = (out - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) and float(out.min()) >= 0 and float(out.max()) <= 1
    with torch.no_grad():
        fooled = trained_model(out).argmax(1) != y
    assert 0.2 < float(fooled.float().mean())  # the lag must not lose the fooled samples


def test_carlini_wagner_deferred_abort_finds_no_less(trained_model, test_batch, monkeypatch) -> None:
    """CW samples that stalled keep optimising until they leave the batch: with the lag they can
    only find more (or smaller) adversarial inputs, at a higher cost."""
    x, y = test_batch
    attack = CarliniWagnerL2(steps=40, binary_search_steps=3)

    def run() -> tuple[torch.Tensor, int]:
        rows: list[int] = []
        hook = trained_model.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
        try:
            return attack(trained_model, x, y), sum(rows)
        finally:
            hook.remove()

    eager, eager_rows = run()
    _deferred(monkeypatch)
    late, late_rows = run()
    with torch.no_grad():
        found_eager = trained_model(eager).argmax(1) != y
        found_late = trained_model(late).argmax(1) != y
    assert late_rows > eager_rows
    assert int(found_late.sum()) >= int(found_eager.sum()) - 1  # one search path may cross another
    both = found_eager & found_late
    l2 = lambda adv: (adv - x).flatten(1).norm(dim=1)  # noqa: E731
    assert float(l2(late)[both].median()) <= float(l2(eager)[both].median()) * 1.02


@pytest.mark.gpu
def test_pgd_on_cuda_matches_the_cpu(trained_model, test_batch) -> None:
    """On CUDA the shrinker defers: the broken samples are the same as the eager CPU run's."""
    x, y = test_batch
    attack = PGD(norm="linf", steps=10, random_start=False)
    cpu = attack(trained_model, x, y, eps=0.15)
    model = trained_model.cuda()
    gpu = attack(model, x.cuda(), y.cuda(), eps=0.15).cpu()
    with torch.no_grad():
        fooled_gpu = model(gpu.cuda()).argmax(1).cpu() != y
    fooled_cpu = trained_model.cpu()(cpu).argmax(1) != y
    assert (fooled_gpu != fooled_cpu).sum() <= 2  # kernels differ in the last bits
