"""The Square attack: budget, bounds and query accounting (hypothesis), strength on the trained
tiny CNN, black-box use (no autograd), determinism, and a cross-check against ART."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustness.attacks import Square
from robustness.attacks.losses import margin
from robustness.attacks.square import p_schedule, pyramid
from robustness.errors import InputError
from robustness.norms import norm_of
from tests.art_utils import art_classifier

TOL = 1e-5


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder(nn.Module):
    """Wraps a model: records every queried batch, and refuses to run under autograd."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.requires_grad:
            raise RuntimeError("this model is a black box: no gradients")
        self.batches.append(x.detach().clone())
        return self.model(x)


class ConvNet(nn.Module):
    """A seeded random conv net for any (C, H, W): logits depend on where pixels are."""

    def __init__(self, channels: int, classes: int, seed: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.head = nn.Linear(4, classes)
        g = _seeded(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


class Unfoolable(nn.Module):
    """Class 0 always wins by a wide margin, but the margin still moves with the input:
    the attack spends its whole budget."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits + 1000.0 * (torch.arange(logits.shape[1]) == 0)


def _match_in_order(batch: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> bool:
    """Rows of ``batch`` are distinct samples of ``x``, in order (the attack only ever drops
    samples from its batch), each within ``eps`` of its own sample: greedy earliest matching."""
    j = 0
    for row in batch:
        while j < x.shape[0] and norm_of((row - x[j])[None], norm).item() > eps * (1 + TOL) + TOL:
            j += 1
        if j == x.shape[0]:
            return False
        j += 1
    return True


# ---------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 5),
    shape=st.sampled_from([(1, 8, 8), (3, 5, 7), (2, 9, 4), (1, 1, 1), (3, 2, 2)]),
    low=st.floats(-2.0, 1.0),
    width=st.floats(0.1, 3.0),
    eps_frac=st.floats(0.01, 1.5),
    queries=st.integers(1, 40),
    restarts=st.integers(1, 3),
    p_init=st.sampled_from([0.05, 0.3, 0.8, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_every_query_inside_budget_and_bounds(
    norm, n, shape, low, width, eps_frac, queries, restarts, p_init, seed
) -> None:
    """Every queried point (not only the result: the base class projects that anyway) lies in
    the bounds and in its own sample's ball; at most ``queries`` calls, none with a sample twice."""
    restarts = min(restarts, queries)
    high = low + width
    g = _seeded(seed)
    x = low + width * torch.rand((n, *shape), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    numel = x[0].numel()
    eps = eps_frac * width * {"linf": 1.0, "l2": numel**0.5, "l1": numel}[norm]
    model = Recorder(ConvNet(shape[0], 3, seed))
    attack = Square(norm=norm, queries=queries, restarts=restarts, p_init=p_init)
    raw = attack._run(model, x, y, eps=eps, bounds=(low, high), target=None, generator=_seeded(seed))
    assert raw.shape == x.shape
    assert torch.all(norm_of(raw - x, norm) <= eps * (1 + TOL) + TOL)
    assert 1 <= len(model.batches) <= queries
    for batch in model.batches:
        assert torch.all(batch >= low - TOL) and torch.all(batch <= high + TOL)
        assert batch.shape[0] <= n and _match_in_order(batch, x, eps, norm)
    out = attack(model, x, y, eps=eps, bounds=(low, high), generator=_seeded(seed))
    assert torch.allclose(out, raw, atol=TOL)  # already inside: the base class changes nothing


def test_linf_proposals_sit_on_the_corners_and_always_change_the_point() -> None:
    """With bounds far away, every Linf query is x +- eps in every pixel, and no proposal
    repeats the current point (a wasted query): the square's signs are flipped when it would."""
    x = torch.full((1, 1, 4, 4), 5.0)
    model = Recorder(Unfoolable(ConvNet(1, 3, 0)))
    y = torch.zeros(1, dtype=torch.long)
    Square(queries=200, p_init=0.05)(model, x, y, eps=0.5, bounds=(0.0, 10.0), generator=_seeded(0))
    queried = torch.cat(model.batches)
    assert len(queried) == 200
    assert torch.allclose((queried - x).abs(), torch.full_like(queried, 0.5))
    with torch.no_grad():
        losses = margin(model.model(queried), y.expand(len(queried)))
    current, current_loss = queried[0], losses[0]
    for point, loss in zip(queried[1:], losses[1:]):
        assert not torch.equal(point, current)
        if loss > current_loss:
            current, current_loss = point, loss


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 10)])
def test_l2_queries_keep_the_norm_at_eps(shape) -> None:
    """Inside wide bounds the L2 moves conserve mass: every query sits on the sphere of radius eps."""
    x = torch.full((1, *shape), 5.0)
    model = Recorder(Unfoolable(ConvNet(shape[0], 3, 1)))
    y = torch.zeros(1, dtype=torch.long)
    Square(norm="l2", queries=150)(model, x, y, eps=2.0, bounds=(0.0, 10.0), generator=_seeded(1))
    sizes = norm_of(torch.cat(model.batches) - x, "l2")
    assert len(sizes) == 150
    assert torch.allclose(sizes, torch.full_like(sizes, 2.0), rtol=1e-4)


# ---------------------------------------------------------------------------- strength


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.5), ("l1", 3.0)])
def test_lowers_accuracy_with_a_few_hundred_queries(norm, eps, trained_model, test_batch) -> None:
    x, y = test_batch
    clean = _acc(trained_model, x, y)
    adv = Square(norm=norm, queries=300)(trained_model, x, y, eps=eps, generator=_seeded(0))
    assert _acc(trained_model, adv, y) < clean - 0.6


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.0)])
def test_more_queries_never_hurt(norm, eps, trained_model, test_batch) -> None:
    """Budgets where the queries still bind (the schedule is rescaled to the budget, so the two
    runs differ from the first step: on a plateau they can differ by a sample either way)."""
    x, y = test_batch
    one = Square(norm=norm, queries=100)(trained_model, x, y, eps=eps, generator=_seeded(0))
    two = Square(norm=norm, queries=200)(trained_model, x, y, eps=eps, generator=_seeded(0))
    assert _acc(trained_model, two, y) <= _acc(trained_model, one, y)


def test_targeted_reaches_the_target(trained_model, test_batch) -> None:
    x, y = test_batch
    target = (y + 3) % 10
    adv = Square(queries=300)(trained_model, x, y, eps=0.3, target=target, generator=_seeded(0))
    with torch.no_grad():
        assert (trained_model(adv).argmax(1) == target).float().mean() > 0.7


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.0)])
def test_breaks_at_least_as_many_as_art_with_the_same_queries(norm, eps, trained_model, test_batch) -> None:
    """Same inputs, eps, p_init and query budget: ART's ``max_iter`` proposals after its one
    initial point equal our ``queries`` (ART also queries the clean inputs, which we do not
    count against it). ART draws from NumPy's and Python's global generators: they are seeded
    here for reproducibility and restored afterwards. One seed suffices: on this model ours broke
    20 to 43 more of the 128 samples than ART at each of the seeds 0, 1 and 2 we tried (ART moves one
    square per iteration for the whole batch, ours one per sample; ART's L2 initial point is NaN
    on 8x8 images, where its tiles are one pixel, so it starts from the clean input)."""
    from art.attacks.evasion import SquareAttack

    x, y = test_batch
    queries = 200
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        np.random.seed(0)
        random.seed(0)
        art = SquareAttack(
            art_classifier(trained_model), norm=np.inf if norm == "linf" else 2, max_iter=queries - 1, eps=eps,
            p_init=0.8, nb_restarts=1, batch_size=128, verbose=False,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            theirs = torch.from_numpy(art.generate(x.numpy(), y=y.numpy()))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    ours = Square(norm=norm, queries=queries, p_init=0.8)(trained_model, x, y, eps=eps, generator=_seeded(0))
    with torch.no_grad():
        art_broken = int((trained_model(theirs).argmax(1) != y).sum())
        ours_broken = int((trained_model(ours).argmax(1) != y).sum())
    assert art_broken > 0
    assert ours_broken >= art_broken


# ---------------------------------------------------------------------------- black box and queries


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_black_box_and_query_budget(norm, trained_model, test_batch) -> None:
    """The model refuses autograd, yet is attacked; never more than ``queries`` calls, and
    fooled samples leave the batch (far fewer rows queried than samples x queries)."""
    x, y = test_batch
    model = Recorder(trained_model)
    queries = 150
    eps = {"linf": 0.2, "l2": 1.5, "l1": 4.0}[norm]
    adv = Square(norm=norm, queries=queries)(model, x, y, eps=eps, generator=_seeded(0))
    assert _acc(trained_model, adv, y) < _acc(trained_model, x, y) - 0.5
    assert len(model.batches) <= queries
    assert all(b.shape[0] <= x.shape[0] for b in model.batches)
    assert sum(b.shape[0] for b in model.batches) < 0.5 * x.shape[0] * queries
    assert all(p.grad is None for p in trained_model.parameters())


def test_restarts_share_the_budget(trained_model, test_batch) -> None:
    x, y = test_batch
    model = Recorder(trained_model)
    Square(queries=60, restarts=3)(model, x, y, eps=0.1, generator=_seeded(0))
    assert len(model.batches) <= 60


def test_fooled_samples_cost_one_query_and_are_kept(trained_model, test_batch) -> None:
    """Started at points that already fool the model, a sample costs exactly its first query
    and comes back unchanged; the others go on."""
    x, y = test_batch
    broken = Square(queries=300)(trained_model, x, y, eps=0.2, generator=_seeded(0))
    with torch.no_grad():
        fooled = trained_model(broken).argmax(1) != y
    start = torch.where(fooled[:, None, None, None], broken, x)
    model = Recorder(trained_model)
    out = Square(queries=50)(model, x, y, eps=0.2, init=start, generator=_seeded(1))
    assert bool(fooled.any()) and not bool(fooled.all())
    assert torch.allclose(out[fooled], broken[fooled], atol=1e-6)
    assert model.batches[0].shape[0] == x.shape[0]
    assert model.batches[1].shape[0] <= int((~fooled).sum())


def test_init_is_the_start_and_the_loss_only_rises(trained_model, test_batch) -> None:
    """Random search accepts only improvements, so the result's loss is at least the start's."""
    x, y = test_batch
    start = (x + 0.05 * torch.randn(x.shape, generator=_seeded(2))).clamp(0, 1)
    start = x + (start - x).clamp(-0.08, 0.08)
    model = Recorder(trained_model)
    out = Square(queries=30)(model, x, y, eps=0.08, init=start, generator=_seeded(0))
    assert torch.allclose(model.batches[0], start, atol=1e-6)
    with torch.no_grad():
        assert torch.all(margin(trained_model(out), y) >= margin(trained_model(start), y) - 1e-4)


# ---------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_deterministic_and_leaves_the_model_alone(norm, trained_model, test_batch) -> None:
    x, y = test_batch
    x, y = x[:32], y[:32]
    state = {k: v.clone() for k, v in trained_model.state_dict().items()}
    eps = {"linf": 0.1, "l2": 0.8, "l1": 1.5}[norm]
    attack = Square(norm=norm, queries=80)
    first = attack(trained_model, x, y, eps=eps, generator=_seeded(5))
    second = attack(trained_model, x, y, eps=eps, generator=_seeded(5))
    other = attack(trained_model, x, y, eps=eps, generator=_seeded(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    assert not trained_model.training
    assert all(torch.equal(v, state[k]) for k, v in trained_model.state_dict().items())


@pytest.mark.gpu
def test_follows_the_input_device(trained_model, test_batch) -> None:
    x, y = (t.cuda() for t in test_batch)
    model = trained_model.cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    for norm, eps in (("linf", 0.2), ("l2", 1.5)):
        adv = Square(norm=norm, queries=100)(model, x, y, eps=eps, generator=gen)
        assert adv.device == x.device
        assert _acc(model, adv, y) < _acc(model, x, y) - 0.5


# ---------------------------------------------------------------------------- pieces and errors


def test_schedule_is_the_papers_rescaled_to_the_budget() -> None:
    assert p_schedule(0.8, 0, 10000) == p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == pytest.approx(0.4)
    assert p_schedule(0.8, 9999, 10000) == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 1, 1000) == 0.8 and p_schedule(0.8, 2, 1000) == pytest.approx(0.4)
    values = [p_schedule(0.5, it, 300) for it in range(300)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert len(set(values)) == 10


@given(size=st.integers(1, 12), norm=st.sampled_from(["l2", "l1"]))
def test_pyramid_block(size, norm) -> None:
    block = pyramid(size, dtype=torch.float64, norm=norm)
    top = size // 2
    assert block.shape == (size, size)
    assert (block.norm() if norm == "l2" else block.abs().sum()).item() == pytest.approx(1.0)
    assert torch.all(block[:top] > 0) and torch.all(block[top:] < 0)
    assert block[top + (size - top) // 2, size // 2] == block[top:].min()  # the peak at the centre
    if size % 2:
        assert torch.equal(block, block.flip(1))


def test_needs_images(trained_model) -> None:
    x = torch.rand(4, 7)
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        Square()(nn.Linear(7, 3), x, torch.zeros(4, dtype=torch.long), eps=0.1)
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        Square()(nn.Linear(7, 3), x, torch.zeros(4, dtype=torch.long), eps=0.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"queries": 0}, {"restarts": 0}, {"queries": 2, "restarts": 3}, {"queries": 10.0}, {"p_init": 0.0},
     {"p_init": 1.5}, {"norm": "l0"}, {"loss": "dlr"}],
)
def test_bad_settings_raise(kwargs) -> None:
    with pytest.raises(InputError):
        Square(**kwargs)


def test_registered() -> None:
    from robustness.registry import ATTACKS

    assert ATTACKS.load("square") is Square
    assert ATTACKS.create("square", norm="l2").norm == "l2"


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.5), ("l1", 5.0)])
def test_returns_the_first_fooling_query(norm, eps, trained_model, test_batch) -> None:
    """One sample at a time, so that every queried row is that sample's: the result is the
    first query the model misclassified, and nothing is queried after it."""
    x, y = test_batch
    for i in range(4):
        model = Recorder(trained_model)
        out = Square(norm=norm, queries=300)(model, x[i : i + 1], y[i : i + 1], eps=eps, generator=_seeded(i))
        queried = torch.cat(model.batches)
        with torch.no_grad():
            fooling = (trained_model(queried).argmax(1) != y[i]).nonzero().squeeze(1)
        assert fooling.numel() == 1 and fooling.item() == len(queried) - 1
        assert torch.allclose(out[0], queried[-1], atol=1e-6)


# ---------------------------------------------------------------------------- L1


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 5), (3, 5), (5, 5), (6, 9)])
def test_l1_rectangles_are_the_references(rows, cols) -> None:
    """The L1 variant's steeper rectangles (weights 1/(k+1)**4, unit L1 norm) equal pyautoattack's."""
    from pyautoattack.square import SquareAttack

    from robustness.attacks.square import _centred

    ref = SquareAttack(nn.Identity(), norm="L1", eps=1.0, device="cpu").eta_rectangles(rows, cols)
    ours = _centred(rows, cols, torch.device("cpu"), torch.float32, "l1")
    assert ours.abs().sum().item() == pytest.approx(1.0)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_l1_inside_ball_and_bounds_deterministic_and_lowers_accuracy(trained_model, test_batch) -> None:
    x, y = test_batch
    model = Recorder(trained_model)
    attack = Square(norm="l1", queries=100)
    raw = attack._run(model, x, y, eps=2.0, bounds=(0.0, 1.0), target=None, generator=_seeded(3))
    for batch in model.batches:  # every query, not only the result, inside the box and its sample's ball
        assert torch.all(batch >= 0.0) and torch.all(batch <= 1.0) and _match_in_order(batch, x, 2.0, "l1")
    assert torch.all(norm_of(raw - x, "l1") <= 2.0 * (1 + TOL))
    assert torch.equal(raw, attack._run(trained_model, x, y, eps=2.0, bounds=(0.0, 1.0), target=None,
                                        generator=_seeded(3)))
    assert _acc(trained_model, raw, y) < _acc(trained_model, x, y) - 0.2


def test_l1_not_weaker_than_pyautoattack_with_the_same_queries(trained_model, test_batch) -> None:
    """pyautoattack's ``SquareAttack(norm='L1')`` with AutoAttack's settings (p_init 0.8, schedule not
    rescaled) and the same 300 queries, at an L1 budget where both leave part of the batch robust: our
    robust accuracy is at most 2 points above the reference's. It draws from torch's global generator:
    seeded here and restored afterwards. (At eps 2 and seed 0 ours left 65 of 128 robust, the
    reference 104: the reference moves one window position for the whole batch, never at the last
    valid offset; ours draws one per sample, over every offset.)"""
    from pyautoattack.square import SquareAttack

    x, y = test_batch
    eps, queries = 2.0, 300
    state = torch.get_rng_state()
    try:
        ref = SquareAttack(trained_model, norm="L1", eps=eps, n_queries=queries, p_init=0.8, n_restarts=1,
                           seed=0, resc_schedule=False, device="cpu")
        theirs = ref.perturb(x, y)
    finally:
        torch.set_rng_state(state)
    ours = Square(norm="l1", queries=queries, p_init=0.8, resc_schedule=False)(
        trained_model, x, y, eps=eps, generator=_seeded(0))
    assert torch.all(norm_of(theirs - x, "l1") <= eps * (1 + TOL))  # the comparison is at one budget
    ref_acc = _acc(trained_model, theirs, y)
    assert 0.0 < ref_acc < _acc(trained_model, x, y)  # the reference breaks some, not all: not vacuous
    assert _acc(trained_model, ours, y) <= ref_acc + 0.02
