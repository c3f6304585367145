"""Sanity checks of the attacks' results: monotone curves, a full-range budget, iterative against
single-step, black-box against white-box, and convergence (see :mod:`robustness.checks`)."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from robustness.attacks.fgsm import FGSM
from robustness.attacks.pgd import PGD, random_start
from robustness.checks.context import CheckContext, count
from robustness.norms import clip_to_bounds
from robustness.report import Check

__all__ = ["CONVERGENCE_MAX_SAMPLES", "CONVERGENCE_POINTS", "CONVERGENCE_SAMPLES", "FULL_RANGE_STEPS", "LARGE_BUDGET", "SQUARE_QUERIES",
           "black_box_vs_white_box", "convergence", "fgsm_first_break", "full_range_budget",
           "iterative_vs_single_step", "monotonic_accuracy"]

CONVERGENCE_POINTS, CONVERGENCE_SAMPLES = 0.02, 1  #: convergence warns above both
CONVERGENCE_MAX_SAMPLES = 16  #: the convergence rerun attacks at most this many of the unbroken samples
SQUARE_QUERIES = 300  #: queries of the black-box check's own Square run
FULL_RANGE_STEPS = 10  #: PGD steps of the full-range check
LARGE_BUDGET = 0.25  #: "large" budget: the ball holds the Linf ball of this fraction of the range
#: the kinds of attack that take many gradient steps: the "iterative" side of iterative-vs-single-step,
#: and what convergence may rerun with twice the steps
MULTI_STEP = ("iterative", "minimization")

# --------------------------------------------------------------------------- the report's curves


def monotonic_accuracy(ctx: CheckContext) -> Check:
    problems: list[str] = []
    curves = {"worst case": ctx.robust_accuracy, **{f"attack {k}": v for k, v in ctx.by_attack.items()}}
    for name, curve in curves.items():
        points = sorted(curve.items())
        for (e0, a0), (e1, a1) in zip(points, points[1:]):
            if a1 > a0 + 1e-9:
                problems.append(f"{name} rises from {a0:.1%} at eps={e0:g} to {a1:.1%} at eps={e1:g}")
    for name, curve in ctx.by_attack.items():
        for eps, acc in curve.items():
            if ctx.robust_accuracy.get(eps, -math.inf) > acc + 1e-9:
                problems.append(f"the worst case ({ctx.robust_accuracy[eps]:.1%}) exceeds attack {name} "
                                f"({acc:.1%}) at eps={eps:g}")
    if problems:
        return ctx.verdict("monotonic-accuracy", False, (
            f"{'; '.join(problems[:4])}{' ...' if len(problems) > 4 else ''}: a sample broken inside a ball is "
            f"broken inside every larger one, so no curve can rise and the per-sample worst case is below every "
            f"attack. The report was aggregated wrongly (merged runs, or an attack's own claims of success "
            f"trusted without re-prediction). Fix: re-run the sweep in one robustness.evaluate call"))
    eps = sorted(ctx.robust_accuracy)
    if len(eps) < 2:
        return Check("monotonic-accuracy", "passed", "a single budget: nothing to compare")
    first, last, chance = ctx.robust_accuracy[eps[0]], ctx.robust_accuracy[eps[-1]], 1.0 / ctx.num_classes
    large = LARGE_BUDGET * ctx.full_range()
    curve = f"accuracy {first:.1%} at eps={eps[0]:g} and {last:.1%} at eps={eps[-1]:g}"
    if first - last < 0.01 and last > chance and eps[-1] >= large:
        return ctx.verdict("monotonic-accuracy", False, (
            f"{curve}: the curve stays flat above chance ({chance:.1%}) up to a large budget (>= {large:g}, "
            f"{LARGE_BUDGET:.0%} of the input range), where real models lose accuracy: the attacks are likely "
            f"failing (masked gradients, a bug in the model wrapper). Fix: see zero-gradients and "
            f"full-range-budget; add a black-box attack ('square')"))
    return Check("monotonic-accuracy", "passed", f"no curve rises; {curve}")


# --------------------------------------------------------------------------- attacks on the subset


def full_range_budget(ctx: CheckContext) -> Check:
    chance = 1.0 / ctx.num_classes
    idx = ctx.correct.nonzero().squeeze(1)
    if idx.numel() <= chance * ctx.n:
        return Check("full-range-budget", "skipped", f"clean accuracy on the subset ({idx.numel()} of {ctx.n}) "
                     f"is not above chance ({chance:.1%}): nothing to measure")
    eps, gen = ctx.full_range(), ctx.generator(1)
    pgd = PGD(norm=ctx.norm, steps=FULL_RANGE_STEPS, random_start=False)
    # from x, then from a point of a small random ball: a random start in the full-range ball is
    # uniform noise, which alone breaks about (1 - 1/C) of the samples and would hide masking
    for start in (False, True):
        init = clip_to_bounds(random_start(ctx.x[idx], 0.1 * eps, ctx.norm, gen), ctx.bounds) if start else None
        adv = pgd(ctx.model, ctx.x[idx], ctx.y[idx], eps=eps, bounds=ctx.bounds, generator=gen, init=init)
        idx = idx[~ctx.fooled(adv, ctx.y[idx])]
        if idx.numel() == 0:
            break
    acc = idx.numel() / ctx.n
    measured = (f"PGD ({FULL_RANGE_STEPS} steps, from the input and from a small random start) at eps={eps:.4g}, "
                f"a ball holding the whole input range, leaves {idx.numel()} of {ctx.n} subset samples "
                f"correct ({acc:.1%}; chance {chance:.1%})")
    ok = acc <= chance
    return ctx.verdict("full-range-budget", ok, measured if ok else (
        f"{measured}: with the whole input range allowed every input can be replaced by another class's "
        f"image, so accuracy above chance means the gradients are obfuscated. Fix: see zero-gradients; use "
        f"BPDA/EOT for preprocessing defenses and add a black-box attack ('square')"))


def iterative_vs_single_step(ctx: CheckContext) -> Check:
    name = "iterative-vs-single-step"
    kinds = ctx.kinds()
    iterative = [k for k, v in kinds.items() if v in MULTI_STEP]
    single = [k for k, v in kinds.items() if v == "single-step"]
    if not ctx.budgets:
        return Check(name, "skipped", "no positive budget in the evaluation")
    if not iterative:
        return Check(name, "skipped", "no iterative or minimization attack in the evaluation")
    if single:
        single_at, source = ctx.first_break(single), f"the evaluation's {', '.join(single)}"
    else:
        single_at, source = fgsm_first_break(ctx), "FGSM run on the subset"
    iter_at = ctx.first_break(iterative)
    if ctx.cascade:  # an iterative attack never ran where an attack before it had broken the sample
        order = list(ctx.attacks)
        iter_at = ctx.first_break(order[:max(order.index(k) for k in iterative) + 1])
    beaten = ctx.correct & (single_at < iter_at)
    k, m = count(beaten), count(ctx.correct)
    measured = (f"{source} broke {count(ctx.correct & (single_at < len(ctx.budgets)))} of {m} correctly "
                f"classified subset samples; {k} of them were not broken by the iterative "
                f"attacks ({', '.join(iterative)}) at the same budget")
    counted = (" The worst case already counts these breaks, but" if single else " The worst case misses them, and")
    return ctx.verdict(name, k == 0, measured if k == 0 else (
        f"{measured}: an iterative attack explores the ball that a single step only probes, so it is weaker "
        f"here than it should be (step size too small or too large, too few steps, a loss that saturates, or "
        f"gradient masking that a single large step jumps over).{counted} the iterative attack's numbers are "
        f"suspect. Fix: tune the iterative attack (more steps and restarts, a margin loss) or use APGD "
        f"('apgd-ce'), which needs no step size{ctx.noise_note()}"))


def fgsm_first_break(ctx: CheckContext) -> Tensor:
    first = torch.full((ctx.n,), len(ctx.budgets), dtype=torch.long, device=ctx.x.device)
    alive, fgsm, gen = ctx.correct.nonzero().squeeze(1), FGSM(norm=ctx.norm), ctx.generator(2)
    for i, eps in enumerate(ctx.budgets):
        if alive.numel() == 0:
            break
        adv = fgsm(ctx.model, ctx.x[alive], ctx.y[alive], eps=eps, bounds=ctx.bounds, generator=gen)
        fooled = ctx.fooled(adv, ctx.y[alive])
        first[alive[fooled]] = i
        alive = alive[~fooled]
    return first


def black_box_vs_white_box(ctx: CheckContext) -> Check:
    name = "black-box-vs-white-box"
    kinds = ctx.kinds()
    black = [k for k, v in kinds.items() if v == "black-box"]
    white = [k for k, v in kinds.items() if v != "black-box"]
    if not ctx.budgets:
        return Check(name, "skipped", "no positive budget in the evaluation")
    if not white:
        return Check(name, "skipped", "no white-box attack in the evaluation to compare with")
    white_at, never = ctx.first_break(white), len(ctx.budgets)
    if black:
        beaten = ctx.correct & (ctx.first_break(black) < white_at)
        k = count(beaten)
        measured = (f"the evaluation's black-box {', '.join(black)} broke {k} of {count(ctx.correct)} correctly "
                    f"classified subset samples before the white-box attacks ({', '.join(white)}) did")
    else:
        if ctx.norm == "l1":
            return Check(name, "skipped", "our Square attack has no L1 mode: no black-box attack to run in L1")
        if ctx.x.dim() != 4:  # Square draws square windows of (C, H, W) images
            return Check(name, "skipped", f"inputs of shape {tuple(ctx.x.shape[1:])} are not images (C, H, W): "
                         f"Square needs (N, C, H, W)")
        try:
            from robustness.attacks.square import Square
        except ImportError as err:
            return Check(name, "skipped", f"the Square attack is not available ({err})")
        alive = (ctx.correct & (white_at == never)).nonzero().squeeze(1)
        eps = ctx.budgets[-1]
        k = 0
        if alive.numel():
            square = Square(norm=ctx.norm, queries=SQUARE_QUERIES, p_init=0.8)
            adv = square(ctx.model, ctx.x[alive], ctx.y[alive], eps=eps, bounds=ctx.bounds, generator=ctx.generator(3))
            k = count(ctx.fooled(adv, ctx.y[alive]))
        measured = (f"Square ({SQUARE_QUERIES} queries) at eps={eps:g} broke {k} of the {alive.numel()} subset "
                    f"samples that the white-box attacks ({', '.join(white)}) left robust")
    return ctx.verdict(name, k == 0, measured if k == 0 else (
        f"{measured}: a black-box attack that only queries the model should not beat attacks that see its "
        f"gradients, so the white-box attacks are too weak here (too few steps or restarts) or the gradients "
        f"are masked{', and the reported accuracy is too high' if not black else ''}. Fix: "
        f"{'' if black else 'add square to the evaluation (the worst case then counts its breaks), '}"
        f"strengthen the white-box attacks (more steps and restarts, 'apgd-ce'), and use BPDA/EOT for "
        f"preprocessing defenses (gradient_mode='adaptive'){ctx.noise_note()}"))


def convergence(ctx: CheckContext) -> Check:
    name = "convergence"
    kinds = ctx.kinds()
    multi_step = [k for k, v in kinds.items() if v in MULTI_STEP]
    steppable = [k for k in multi_step if isinstance(getattr(ctx.attacks[k], "steps", None), int)
                 and dataclasses.is_dataclass(ctx.attacks[k])]
    # a minimization attack (Carlini-Wagner) reruns its whole binary search: tens of times the cost of
    # a fixed-budget attack, so it is the candidate only when the evaluation has no other
    candidates = [k for k in steppable if kinds[k] != "minimization"] or steppable
    stepless = [k for k in multi_step if k not in steppable]
    no_steps = f"{', '.join(stepless)} (no integer `steps` setting to double)"
    if not ctx.budgets:
        return Check(name, "skipped", "no positive budget in the evaluation")
    if not candidates:
        return Check(name, "skipped", "no attack of the evaluation has a number of steps to double"
                     + (f": {no_steps}" if stepless else ""))
    i = min(range(len(ctx.budgets)), key=lambda j: abs(ctx.robust_accuracy.get(ctx.budgets[j], 0.0) - 0.5))
    eps = ctx.budgets[i]
    strongest = min(candidates, key=lambda k: ctx.by_attack.get(k, {}).get(eps, math.inf))
    attack = ctx.attacks[strongest]
    # twice the steps in one run (restarts, if any, are not repeated: the question is whether a run
    # had converged, and one longer run answers it at a fraction of the cost)
    changes = {"steps": 2 * attack.steps, **({"restarts": 1} if hasattr(attack, "restarts") else {})}
    doubled = dataclasses.replace(attack, **changes)
    # the doubled run is added to what the sweep found (as one more attack of the ensemble would be): it
    # only runs on (at most CONVERGENCE_MAX_SAMPLES of) the samples that no attack broke (the reported worst
    # case), and counts the ones it breaks
    survivors = (ctx.correct & (ctx.first_break(list(ctx.attacks)) > i)).nonzero().squeeze(1)
    alive = survivors[:CONVERGENCE_MAX_SAMPLES]
    k = 0
    if alive.numel():
        x0, y0 = ctx.x[alive], ctx.y[alive]
        adv = doubled(ctx.model, x0, y0, eps=eps, bounds=ctx.bounds, generator=ctx.generator(4))
        k = count(ctx.fooled(adv, y0))
    costly = ", ".join(k for k in steppable if k not in candidates)
    tried = f"{alive.numel()} of them" if alive.numel() < survivors.numel() else "them"
    measured = (f"at eps={eps:g} (worst case closest to 50%), the attacks left {survivors.numel()} of {ctx.n} "
                f"subset samples robust; a fresh run of {strongest} with {doubled.steps} steps instead of "
                f"{attack.steps}{' (and a new random start)' if getattr(attack, 'random_start', False) else ''} on "
                f"{tried} breaks {k}"
                + (f"; {costly} (minimization) not rerun: too costly" if costly else "")
                + (f"; not rerun: {no_steps}" if stepless else ""))
    # a sample of the survivors: scale its breaks up to all of them
    estimate = k * survivors.numel() / alive.numel() if alive.numel() else 0.0
    ok = not (estimate / ctx.n > CONVERGENCE_POINTS and k > CONVERGENCE_SAMPLES)
    share = f"{k / ctx.n:.1%} of the subset" if alive.numel() == survivors.numel() else (
        f"about {estimate / ctx.n:.1%} of the subset, scaled to all {survivors.numel()} unbroken samples")
    return ctx.verdict(name, ok, measured if ok else (
        f"{measured} ({share}): the attack had not converged, as more steps or merely "
        f"another random start find adversarial examples it missed, so the reported accuracy is too high. Fix: "
        f"raise its steps and restarts until a doubled rerun no longer changes the result, or use APGD ('apgd-ce')"))


#: the checks, in the order they run and are reported
