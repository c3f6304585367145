"""Carlini-Wagner L2 (attacks/carlini_wagner.py): contract, correctness, and a cross-check with ART."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from robustness.attacks.carlini_wagner import CarliniWagnerL2
from robustness.errors import InputError
from tests.min_norm_utils import Rescaled

# small budgets: the whole file runs in well under a minute on two cores
FAST = {"binary_search_steps": 4, "steps": 40}


def _l2(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).flatten(1).norm(dim=1)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _correct(model: nn.Module, x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    keep = _predict(model, x) == y
    return x[keep][:n], y[keep][:n]


def _check_contract(model: nn.Module, x: Tensor, y: Tensor, adv: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Shape, bounds, and every changed input verified adversarial; returns the changed mask."""
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= bounds[0] and adv.max() <= bounds[1]
    changed = (adv != x).flatten(1).any(dim=1)
    assert (_predict(model, adv[changed]) != y[changed]).all()
    return changed


class _NegativeLogits(nn.Module):
    """Same predictions and margins as ``model``, but every logit is <= -1 (torchattacks issue 184)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        z = self.model(x)
        return z - z.amax(dim=1, keepdim=True) - 1.0


def test_shape_bounds_and_every_changed_input_is_adversarial(trained_model, test_batch):
    x, y = test_batch
    adv = CarliniWagnerL2(**FAST)(trained_model, x, y)
    changed = _check_contract(trained_model, x, y, adv, (0.0, 1.0))
    clean_wrong = _predict(trained_model, x) != y
    # inputs misclassified already come back unchanged (L2 = 0); almost all others are attacked
    assert not changed[clean_wrong].any()
    assert changed.float().mean() > 0.9


def test_other_bounds(trained_model, test_batch):
    x, y = test_batch[0][:64], test_batch[1][:64]
    model = Rescaled(trained_model)
    z = 2 * x - 1
    adv = CarliniWagnerL2(**FAST)(model, z, y, bounds=(-1.0, 1.0))
    changed = _check_contract(model, z, y, adv, (-1.0, 1.0))
    assert changed.float().mean() > 0.9
    # the same attack in [0, 1] units finds about the same distances (half of them in [-1, 1] units)
    adv01 = CarliniWagnerL2(**FAST)(trained_model, x, y)
    both = changed & (adv01 != x).flatten(1).any(dim=1)
    ratio = _l2(adv[both], z[both]).median() / (2 * _l2(adv01[both], x[both]).median())
    assert 0.8 < float(ratio) < 1.25


def test_eps_keeps_only_perturbations_within_budget(trained_model, test_batch):
    x, y = test_batch[0][:64], test_batch[1][:64]
    attack = CarliniWagnerL2(**FAST)
    unrestricted = attack(trained_model, x, y)
    eps = float(_l2(unrestricted, x)[(unrestricted != x).flatten(1).any(dim=1)].median())
    adv = attack(trained_model, x, y, eps=eps)
    changed = _check_contract(trained_model, x, y, adv, (0.0, 1.0))
    assert (_l2(adv[changed], x[changed]) <= eps + 1e-6).all()
    # the others are the clean inputs, and exactly those of the unrestricted result beyond eps
    assert torch.equal(adv[~changed], x[~changed])
    within = _l2(unrestricted, x) <= eps
    assert torch.equal(adv, torch.where(within.view(-1, 1, 1, 1), unrestricted, x))
    assert changed.sum() >= 16


def test_lowers_accuracy_and_is_deterministic(trained_model, test_batch):
    x, y = test_batch
    attack = CarliniWagnerL2(binary_search_steps=5, steps=50)
    first = attack(trained_model, x, y)
    second = attack(trained_model, x, y)
    assert torch.equal(first, second)
    clean_acc = (_predict(trained_model, x) == y).float().mean()
    adv_acc = (_predict(trained_model, first) == y).float().mean()
    assert clean_acc > 0.9
    assert adv_acc < 0.05
    # and with small perturbations: half of the inputs within L2 0.8 (the pixels are in [0, 1])
    assert (_predict(trained_model, attack(trained_model, x, y, eps=0.8)) == y).float().mean() < 0.5


def test_all_negative_logits_are_attacked_correctly(trained_model, test_batch):
    """With a margin that masks the true class with 0 instead of -inf, every input looks adversarial
    from the start when all logits are negative, and nothing real is found."""
    x, y = _correct(trained_model, *test_batch, n=64)
    negative = _NegativeLogits(trained_model)
    with torch.no_grad():
        assert (negative(x) <= -1.0).all()
    adv = CarliniWagnerL2(**FAST)(negative, x, y)
    changed = _check_contract(negative, x, y, adv, (0.0, 1.0))
    assert changed.all()
    reference = CarliniWagnerL2(**FAST)(trained_model, x, y)
    # same margins, same attack: the same distances up to rounding
    assert torch.allclose(_l2(adv, x), _l2(reference, x), rtol=0.05, atol=1e-3)


def test_targeted_reaches_the_target(trained_model, test_batch):
    x, y = _correct(trained_model, *test_batch, n=64)
    target = (y + 1 + torch.arange(len(y)) % 9) % 10  # never the true label
    adv = CarliniWagnerL2(binary_search_steps=5, steps=50)(trained_model, x, y, target=target)
    changed = (adv != x).flatten(1).any(dim=1)
    pred = _predict(trained_model, adv)
    assert (pred[changed] == target[changed]).all()
    assert (pred == target).float().mean() >= 0.8


def test_confidence_reaches_the_margin(trained_model, test_batch):
    x, y = _correct(trained_model, *test_batch, n=32)
    weak = CarliniWagnerL2(**FAST)(trained_model, x, y)
    strong = CarliniWagnerL2(**FAST, confidence=5.0)(trained_model, x, y)
    found = (strong != x).flatten(1).any(dim=1)
    with torch.no_grad():
        logits = trained_model(strong[found])
    true = logits.gather(1, y[found, None]).squeeze(1)
    other = logits.scatter(1, y[found, None], float("-inf")).amax(1)
    assert found.float().mean() > 0.8
    assert (other - true > 5.0 - 1e-3).all()
    assert _l2(strong[found], x[found]).median() > _l2(weak[found], x[found]).median()


@pytest.mark.parametrize("norm", ["linf", "LINF"])
def test_linf_is_refused_with_a_clear_message(norm):
    with pytest.raises(InputError, match=r"L2 attack.*PGD or FGSM"):
        CarliniWagnerL2(norm=norm)


@pytest.mark.parametrize(
    "settings",
    [
        {"norm": "l1"},
        {"binary_search_steps": 0},
        {"steps": 0},
        {"steps": 2.5},
        {"learning_rate": 0.0},
        {"learning_rate": float("nan")},
        {"initial_const": -1.0},
        {"confidence": -0.5},
        {"abort_early": "yes"},
    ],
)
def test_invalid_settings_raise_input_error(settings):
    with pytest.raises(InputError):
        CarliniWagnerL2(**settings)


def test_bad_call_arguments_raise_input_error(trained_model, test_batch):
    x, y = test_batch[0][:4], test_batch[1][:4]
    with pytest.raises(InputError, match="class indices"):
        CarliniWagnerL2(**FAST)(trained_model, x, y + 10)
    with pytest.raises(InputError, match="logits of shape"):
        CarliniWagnerL2(**FAST)(lambda t: t.flatten(1).sum(1), x, y)
    with pytest.raises(InputError):
        CarliniWagnerL2(**FAST)(trained_model, x, y, bounds=(1.0, 0.0))


def test_empty_batch_and_already_misclassified(trained_model, test_batch):
    x, y = test_batch
    empty = CarliniWagnerL2(**FAST)(trained_model, x[:0], y[:0])
    assert empty.shape == x[:0].shape
    wrong = (_predict(trained_model, x) + 1) % 10  # every input is misclassified for these labels
    assert torch.equal(CarliniWagnerL2(**FAST)(trained_model, x, wrong), x)


def test_model_is_left_unchanged(trained_model, test_batch):
    x, y = test_batch[0][:32], test_batch[1][:32]
    before = {k: v.clone() for k, v in trained_model.state_dict().items()}
    modes = [m.training for m in trained_model.modules()]
    flags = [p.requires_grad for p in trained_model.parameters()]
    CarliniWagnerL2(**FAST)(trained_model, x, y)
    after = trained_model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in trained_model.modules()] == modes
    assert [p.requires_grad for p in trained_model.parameters()] == flags
    assert all(p.grad is None for p in trained_model.parameters())


class _Counting(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batch_sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batch_sizes.append(x.shape[0])
        return self.model(x)


def test_abort_early_saves_work_and_false_runs_every_step(trained_model, test_batch):
    x, y = _correct(trained_model, *test_batch, n=32)
    full = _Counting(trained_model).eval()
    CarliniWagnerL2(binary_search_steps=3, steps=20, abort_early=False)(full, x, y)
    # one check of the clean inputs, every step of every search step on the whole batch, one final check
    assert full.batch_sizes == [32] * (1 + 3 * 20 + 1)
    early = _Counting(trained_model).eval()
    CarliniWagnerL2(binary_search_steps=3, steps=20)(early, x, y)
    assert sum(early.batch_sizes) < sum(full.batch_sizes)
    assert min(early.batch_sizes) < 32  # finished inputs leave the batch


def test_registry_name():
    assert CarliniWagnerL2.name == "cw"
    assert CarliniWagnerL2.minimizes
    assert CarliniWagnerL2().norm == "l2"


def test_at_least_as_good_as_art(trained_model, digits):
    """Same model, 64 correctly classified test images, same budgets as ART's CarliniL2Method
    (binary_search_steps=5, max_iter=50): ours finds at least as many adversarial examples, with
    a median L2 (over the successes of each) no larger."""
    art_evasion = pytest.importorskip("art.attacks.evasion")
    art_classification = pytest.importorskip("art.estimators.classification")
    x, y = _correct(trained_model, digits[2], digits[3], n=64)
    classifier = art_classification.PyTorchClassifier(
        model=trained_model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
        clip_values=(0.0, 1.0), device_type="cpu",
    )
    art_attack = art_evasion.CarliniL2Method(
        classifier, binary_search_steps=5, max_iter=50, batch_size=64, verbose=False
    )
    art_adv = torch.from_numpy(art_attack.generate(x.numpy(), y=y.numpy()))
    ours_adv = CarliniWagnerL2(binary_search_steps=5, steps=50)(trained_model, x, y)

    def successes(adv: Tensor) -> Tensor:
        return (_predict(trained_model, adv) != y) & (adv != x).flatten(1).any(dim=1)

    art_ok, ours_ok = successes(art_adv), successes(ours_adv)
    art_median = _l2(art_adv[art_ok], x[art_ok]).median()
    ours_median = _l2(ours_adv[ours_ok], x[ours_ok]).median()
    assert int(ours_ok.sum()) >= int(art_ok.sum()) > 0
    assert ours_median <= art_median * (1 + 1e-6)
