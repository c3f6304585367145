"""ART interop (attacks/art_adapter.py): spec parsing, the runner over ART attacks, FGM against our
FGSM, a minimization attack, reproducibility without touching the global RNGs, an untouched
model, and the CLI path."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import robustness
from robustness.attacks import FGSM
from robustness.attacks.art_adapter import ART_BLACK_BOX, ARTAttack, art_attack_names, from_spec
from robustness import cli
from robustness.errors import InputError
from robustness.loading import DEFAULT_MODEL_PATH
from robustness.norms import norm_of

PGD_SPEC = "art:ProjectedGradientDescent(max_iter=10)"


def _rng_states() -> tuple:
    return np.random.get_state(), random.getstate(), torch.get_rng_state()


def _same_rng_states(a: tuple, b: tuple, torch_too: bool = True) -> bool:
    (np_a, py_a, torch_a), (np_b, py_b, torch_b) = a, b
    same_np = np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1]) and np_a[2:] == np_b[2:]
    return same_np and py_a == py_b and (not torch_too or torch.equal(torch_a, torch_b))


# ---------------------------------------------------------------- specs and validation


def test_from_spec_reads_names_settings_and_case() -> None:
    plain = from_spec("DeepFool", norm="linf")
    assert (plain.attack, plain.settings, plain.norm, plain.label) == ("DeepFool", (), "linf", "art:DeepFool")
    pgd = from_spec(" art:ProjectedGradientDescent(max_iter=20, eps_step=0.01, random_eps=True) ", norm="L2")
    assert pgd.settings == (("eps_step", 0.01), ("max_iter", 20), ("random_eps", True))  # sorted by name
    assert pgd.norm == "l2" and pgd.label == "art:ProjectedGradientDescent"
    assert from_spec("deepfool(max_iter=3)", norm="linf").attack == "DeepFool"  # a lower-cased spec still works
    apgd = from_spec("AutoProjectedGradientDescent(loss_type='difference_logits_ratio', nb_random_init=2)", norm="l2")
    assert dict(apgd.settings) == {"loss_type": "difference_logits_ratio", "nb_random_init": 2}
    patch = from_spec("AdversarialPatchPyTorch(patch_shape=(1, 4, 4), patch_location=(0, -1))", norm="linf")
    assert dict(patch.settings) == {"patch_shape": (1, 4, 4), "patch_location": (0, -1)}


def test_dict_settings_and_the_convenience_constructor_agree() -> None:
    a = ARTAttack(attack="ProjectedGradientDescent", settings={"max_iter": 5, "decay": None}, norm="linf")
    b = ARTAttack.of("projectedgradientdescent", {"decay": None}, max_iter=5)
    c = from_spec("ProjectedGradientDescent(max_iter=5, decay=None)", norm="linf")
    assert a == b == c and hash(a) == hash(c) and len({a, b, c}) == 1
    with pytest.raises(InputError, match="twice"):
        ARTAttack.of("DeepFool", {"max_iter": 5}, max_iter=6)


def test_kind_follows_the_wrapped_class() -> None:
    """What the sanity checks compare an ART attack with: its declared kind, from ART's class."""
    kinds = {name: ARTAttack.of(name).kind for name in ("FastGradientMethod", "SquareAttack", "HopSkipJump",
                                                         "ProjectedGradientDescent", "DeepFool")}
    assert kinds == {"FastGradientMethod": "single-step", "SquareAttack": "black-box", "HopSkipJump": "black-box",
                     "ProjectedGradientDescent": "iterative", "DeepFool": "iterative"}
    assert ART_BLACK_BOX <= set(art_attack_names())  # every name in the table is a class of the installed ART


@settings(max_examples=25, deadline=None)
@given(
    values=st.fixed_dictionaries(
        {},
        optional={
            "max_iter": st.integers(1, 10**6),
            "batch_size": st.integers(1, 4096),
            "decay": st.none() | st.floats(0, 10, allow_nan=False),
            "random_eps": st.booleans(),
            "num_random_init": st.integers(0, 100),
            "eps_step": st.floats(1e-9, 1e3, allow_nan=False),
        },
    ),
    norm=st.sampled_from(["linf", "l2"]),
)
def test_spec_round_trips(values, norm) -> None:
    attack = ARTAttack.of("ProjectedGradientDescent", values, norm=norm)
    again = from_spec(attack.spec, norm=norm)
    assert again == attack and again.describe() == attack.describe()
    assert attack.describe().startswith("art:ProjectedGradientDescent")


def test_unknown_class_suggests_close_names() -> None:
    with pytest.raises(InputError, match="did you mean DeepFool"):
        from_spec("DeepFol", norm="linf")
    with pytest.raises(InputError, match="ProjectedGradientDescent"):
        from_spec("ProjectedGradientDescnt(max_iter=3)", norm="linf")
    with pytest.raises(InputError, match="SquareAttack") as err:  # nothing close: every name is listed
        from_spec("Xyzzy", norm="linf")
    assert all(name in str(err.value) for name in ("DeepFool", "HopSkipJump"))
    assert {"DeepFool", "HopSkipJump", "SquareAttack", "CarliniL2Method"} <= set(art_attack_names())


def test_unknown_setting_names_the_valid_ones() -> None:
    with pytest.raises(InputError, match="max_iter") as err:
        from_spec("ProjectedGradientDescent(max_iters=3)", norm="linf")
    assert "eps_step" in str(err.value) and "did you mean" in str(err.value)
    with pytest.raises(InputError, match="nb_grads"):
        from_spec("DeepFool(steps=3)", norm="linf")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("ProjectedGradientDescent(eps=0.1)", "owns the budget"),
        ("DeepFool(eps=0.1)", "owns the budget"),  # even where ART takes no eps
        ("FastGradientMethod(norm=2)", "owns the norm"),
        ("ProjectedGradientDescent(targeted=True)", "target labels"),
        ("ProjectedGradientDescent(estimator=None)", "passes the model"),
    ],
)
def test_settings_the_runner_owns_are_refused(spec, message) -> None:
    with pytest.raises(InputError, match=message):
        from_spec(spec, norm="linf")


@pytest.mark.parametrize(
    "spec,message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ProjectedGradientDescent(max_iter=", "never closed|cannot read"),
        ("ProjectedGradientDescent(10)", "named"),
        ("ProjectedGradientDescent(max_iter=np.inf)", "must be numbers"),
        ("ProjectedGradientDescent(max_iter=[10])", "must be numbers"),
        ("ProjectedGradientDescent(max_iter={1: 2})", "must be numbers"),
        ("ProjectedGradientDescent(max_iter=1+2j)", "must be numbers"),
        ("ProjectedGradientDescent(**{'max_iter': 3})", r"'\*\*'"),
        ("evasion.DeepFool", "bare class name"),
        ("DeepFool()()", "cannot read"),
        ("DeepFool; import os", "cannot read"),
        ("DeepFool(max_iter=3, max_iter=4)", "twice"),
    ],
)
def test_malformed_specs(spec, message) -> None:
    with pytest.raises(InputError, match=message):
        from_spec(spec, norm="linf")


def test_attacks_that_cannot_run_on_a_classifier_are_refused() -> None:
    with pytest.raises(InputError, match="ObjectDetector"):
        from_spec("DPatch", norm="linf")
    with pytest.raises(InputError, match="needs the settings attacker"):
        from_spec("FrameSaliencyAttack", norm="linf")
    with pytest.raises(InputError, match="not an evasion attack"):
        from_spec("fast_gradient", norm="linf")  # a module of art.attacks.evasion, not a class
    with pytest.raises(InputError, match="norm"):
        from_spec("HopSkipJump", norm="l1")


# ---------------------------------------------------------------- through the runner


def test_runner_over_art_attacks_within_budget_and_fgm_equals_our_fgsm(trained_model, test_batch) -> None:
    x, y = test_batch
    eps = [0.0, 0.1, 0.2]
    report = robustness.evaluate(trained_model, (x, y), attacks=[PGD_SPEC, "art:FastGradientMethod", FGSM()],
                                 epsilons=eps, progress=False)
    assert set(report.by_attack) == {"art:ProjectedGradientDescent", "art:FastGradientMethod", "fgsm"}
    assert report.attacks["art:ProjectedGradientDescent"].startswith("art:ProjectedGradientDescent(max_iter=10)")
    for e in (0.1, 0.2):
        assert report.max_perturbation[e] <= e + 1e-6
        for name in ("art:ProjectedGradientDescent", "art:FastGradientMethod"):
            assert report.by_attack[name][e] < report.clean_accuracy
    assert report.by_attack["art:ProjectedGradientDescent"][0.2] <= report.by_attack["art:FastGradientMethod"][0.2]
    # the same algorithm on the same inputs: the same samples broken at the same budgets
    assert report.by_attack["art:FastGradientMethod"] == report.by_attack["fgsm"]
    assert report.per_sample["broken_at:art:FastGradientMethod"] == report.per_sample["broken_at:fgsm"]


def test_called_directly_stays_in_budget_bounds_dtype_and_device(trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    for norm, eps in (("linf", 0.05), ("l2", 0.5)):
        adv = ARTAttack.of("ProjectedGradientDescent", max_iter=5, norm=norm)(
            trained_model, x, y, eps=eps, bounds=(0.0, 1.0))
        assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
        assert float(norm_of(adv - x, norm).max()) <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_minimization_attack_runs_and_verified_accuracy_is_monotone(trained_model, test_batch) -> None:
    x, y = test_batch[0][:64], test_batch[1][:64]
    eps = [0.0, 0.25, 0.5, 1.0, 2.0]
    report = robustness.evaluate(trained_model, (x, y), attacks=["art:DeepFool(max_iter=20)"], epsilons=eps,
                                 norm="l2", progress=False)
    acc = [report.by_attack["art:DeepFool"][e] for e in eps]
    assert all(a >= b for a, b in zip(acc, acc[1:]))
    assert acc[-1] < acc[0]  # DeepFool's perturbations mostly fit in an L2 ball of 2 on 8x8 digits
    assert all(report.max_perturbation[e] <= e + 1e-6 for e in eps[1:])


def test_attacks_that_hand_float64_arrays_to_the_model_run(trained_model, test_batch) -> None:
    x, y = test_batch[0][:4], test_batch[1][:4]  # HopSkipJump works in float64 (ART issue 2475)
    attack = from_spec("HopSkipJump(max_iter=1, max_eval=20, init_eval=5, init_size=20)", norm="l2")
    adv = attack(trained_model, x, y, eps=2.0)
    assert adv.dtype == x.dtype and float(norm_of(adv - x, "l2").max()) <= 2.0 + 1e-5


def test_targeted_call_reaches_targets_and_untargetable_attacks_refuse(trained_model, test_batch) -> None:
    x, y = test_batch[0][:64], test_batch[1][:64]
    target = (y + 1) % 10
    attack = ARTAttack.of("ProjectedGradientDescent", max_iter=10)
    adv = attack(trained_model, x, y, eps=0.3, target=target)
    with torch.no_grad():
        hit = (trained_model(adv).argmax(1) == target).float().mean()
        before = (trained_model(x).argmax(1) == target).float().mean()
    assert hit > before + 0.5
    with pytest.raises(InputError, match="no targeted mode"):
        ARTAttack.of("DeepFool", max_iter=5)(trained_model, x, y, eps=0.3, target=target)
    with pytest.raises(InputError, match="labels must lie in"):
        attack(trained_model, x, y, eps=0.3, target=target + 10)


def test_settings_art_rejects_become_input_errors(trained_model, test_batch) -> None:
    x, y = test_batch
    with pytest.raises(InputError, match="rejected"):
        from_spec("ProjectedGradientDescent(max_iter=-3)", norm="linf")(trained_model, x[:4], y[:4], eps=0.1)


def test_model_on_another_device_is_refused(trained_model, test_batch) -> None:
    x, y = test_batch[0][:4].to("meta"), test_batch[1][:4].to("meta")  # ART would move the model there
    with pytest.raises(InputError, match="device"):
        from_spec("FastGradientMethod", norm="linf")._run(trained_model, x, y, eps=0.1, bounds=(0.0, 1.0),
                                                          target=None, generator=torch.Generator())


@pytest.mark.gpu
def test_on_cuda_follows_the_input_device(trained_model, test_batch) -> None:
    x, y = test_batch
    attack = from_spec("FastGradientMethod", norm="linf")
    on_cpu = attack(trained_model, x, y, eps=0.1)
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    model = trained_model.to(device)
    on_gpu = attack(model, x.to(device), y.to(device), eps=0.1)
    assert on_gpu.device == device
    # FGSM steps by the gradient's sign: where a component is ~0, CPU and GPU kernels (TF32
    # convolutions) may disagree on it, so a few pixels may differ, each by at most 2 * eps
    differs = (on_gpu.cpu() - on_cpu).abs() > 1e-5
    assert differs.float().mean() < 0.02
    assert (on_gpu.cpu() - on_cpu).abs().max() <= 0.2 + 1e-5
    assert (on_gpu.cpu() - x).abs().max() <= 0.1 + 1e-5
    assert all(p.device == device for p in model.parameters())


# ---------------------------------------------------------------- reproducibility and side effects


def test_same_seed_same_report_and_global_rngs_untouched(trained_model, test_batch) -> None:
    x, y = test_batch[0][:64], test_batch[1][:64]
    attacks = ["art:ProjectedGradientDescent(max_iter=3, num_random_init=1)", "art:SquareAttack(max_iter=10)"]
    reports = []
    for global_seed in (1, 2):  # the global RNGs are in different states: they must not matter
        np.random.seed(global_seed)
        random.seed(global_seed)
        before = _rng_states()
        reports.append(robustness.evaluate(trained_model, (x, y), attacks=attacks, epsilons=[0.1, 0.2], seed=3,
                                           progress=False))
        # NumPy's and Python's (what ART draws from); torch's is checked per call below
        assert _same_rng_states(before, _rng_states(), torch_too=False)
    a, b = reports
    same = json.dumps(a.per_sample, sort_keys=True) == json.dumps(b.per_sample, sort_keys=True)  # NaN-safe
    assert same and a.by_attack == b.by_attack and a.robust_accuracy == b.robust_accuracy


def test_the_call_generator_drives_art_randomness(trained_model, test_batch) -> None:
    x, y = test_batch[0][:32], test_batch[1][:32]
    attack = ARTAttack.of("ProjectedGradientDescent", max_iter=2, num_random_init=1)

    def run(seed: int) -> torch.Tensor:
        return attack(trained_model, x, y, eps=0.1, generator=torch.Generator().manual_seed(seed))

    before = _rng_states()
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))
    assert _same_rng_states(before, _rng_states())


def test_model_comes_back_bit_identical(trained_model, test_batch) -> None:
    x, y = test_batch[0][:64], test_batch[1][:64]
    trained_model.train()
    trained_model.features[1].eval()  # a mixed mode must survive
    grads = {name: torch.full_like(p, 0.5) for name, p in trained_model.named_parameters()}
    for name, p in trained_model.named_parameters():
        p.grad = grads[name]  # ART's classifier clears parameter gradients: the adapter must put them back
    trained_model.head.bias.requires_grad_(False)
    state = {k: v.clone() for k, v in trained_model.state_dict().items()}
    modes = [m.training for m in trained_model.modules()]
    flags = [p.requires_grad for p in trained_model.parameters()]

    def unchanged() -> bool:
        after = trained_model.state_dict()
        return (all(torch.equal(state[k], after[k]) for k in state)  # BatchNorm statistics included
                and modes == [m.training for m in trained_model.modules()]
                and flags == [p.requires_grad for p in trained_model.parameters()]
                and all(torch.equal(p.grad, grads[n]) for n, p in trained_model.named_parameters()))

    robustness.evaluate(trained_model, (x, y), attacks=[PGD_SPEC, "art:DeepFool(max_iter=3)"], epsilons=[0.1],
                        progress=False)
    assert unchanged()
    for name, p in trained_model.named_parameters():
        p.grad = grads[name]
    ARTAttack.of("FastGradientMethod")(trained_model, x, y, eps=0.1)  # called directly, in the mixed mode
    assert unchanged()
    assert all(p.grad is grads[n] for n, p in trained_model.named_parameters())  # the very same tensors


# ---------------------------------------------------------------- CLI


def test_cli_runs_art_entries_next_to_registry_names(tmp_path, capsys) -> None:
    code = cli.main(["evaluate", "--attacks", "art:FastGradientMethod,pgd", "--eps", "0,0.1", "--n", "64",
                     "--quiet", "--out", str(tmp_path), "--model", str(DEFAULT_MODEL_PATH)])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["attacks"]) == set(report["by_attack"]) == {"art:FastGradientMethod", "pgd"}
    assert report["by_attack"]["art:FastGradientMethod"]["0.1"] <= report["clean_accuracy"]
    assert report["max_perturbation"]["0.1"] <= 0.1 + 1e-6


def test_cli_keeps_commas_inside_settings(tmp_path, capsys) -> None:
    assert cli.split_attack_list("pgd,art:ProjectedGradientDescent(max_iter=2,eps_step=0.01)") == [
        "pgd", "art:ProjectedGradientDescent(max_iter=2,eps_step=0.01)"]
    code = cli.main(["evaluate", "--attacks", "art:DeepFoo", "--eps", "0,0.1", "--n", "8", "--quiet",
                     "--out", str(tmp_path), "--model", str(DEFAULT_MODEL_PATH)])
    assert code == 2 and "did you mean DeepFool" in capsys.readouterr().err


def test_importing_art_leaves_the_callers_logging_working(tmp_path) -> None:
    """ART's import runs logging.config.dictConfig, which would close a handler set up before it."""
    import subprocess
    import sys
    import textwrap

    log_file = tmp_path / "run.log"
    script = textwrap.dedent(f"""
        import logging
        handler = logging.FileHandler({str(log_file)!r}, mode="w")
        logging.getLogger("user").addHandler(handler)
        logging.getLogger("user").setLevel(logging.INFO)
        from robustness.attacks.art_adapter import from_spec
        from_spec("FastGradientMethod", norm="linf")  # imports ART for the first time
        logging.getLogger("user").info("after import")
        handler.flush()
        assert logging.getLogger("tests").handlers == []
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "after import" in log_file.read_text()
