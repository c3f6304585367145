"""``robustness train``: a thin adapter over :class:`robustness.defenses.AdversarialTrainer`.

It builds the architecture, the data loaders, the optimizer (SGD, Nesterov momentum 0.9) and a
one-cycle learning rate (linear up to ``--lr`` over the first 40% of the steps, then down to about
0, as in Wong et al. 2020), trains with a resumable per-epoch state in ``OUT.state`` (and its
history in ``OUT.history.json``), and writes ``OUT`` with :func:`robustness.loading.save_checkpoint`,
so ``robustness evaluate --model OUT`` needs no other flag. An existing ``OUT`` or ``OUT.state``
(an earlier run) is never replaced silently: ``--resume`` continues it, ``--overwrite`` removes
both (and the history) before training, and without either the command exits 2 saying which.
Exit codes (set by :func:`robustness.cli.main`): 0 ok, 2 usage or input error. Under torchrun (or ``--nproc K``) it
trains with DistributedDataParallel, ``--batch-size`` being the global batch; rank 0 writes and prints.

:mod:`robustness.cli` adds the subcommand with :func:`_add_train_parser` and runs it with
:func:`_train`; the helpers this module shares with ``evaluate`` (``parse_epsilons``, ``--device``
and ``--nproc`` handling) live in :mod:`robustness.cli.common`.

Example::

    robustness train --method fgsm-rs --eps 0.1 --epochs 10 --out digits_at.pt
    robustness evaluate --model digits_at.pt
"""

from __future__ import annotations

import argparse
import random
import shlex
import time
from pathlib import Path

import numpy as np
import torch

from robustness import datasets, loading
from robustness.architectures import build_architecture, default_architecture
from robustness.cli.common import (MAX_PROCESSES, add_nproc, check_writable, float_type, int_type, naming,
                                   parse_device, parse_epsilons, parse_seed)
from robustness.distributed import ProcessGroup, torchrun_session
from robustness.errors import InputError
from robustness.model import NormalizedModel
from robustness.norms import NORMS

__all__ = ["DEFAULT_TRAIN_EPS"]

#: default training budget per dataset and norm (pixel space, inputs in [0, 1])
DEFAULT_TRAIN_EPS: dict[str, dict[str, str]] = {
    "digits": {"linf": "0.1", "l2": "1", "l1": "2"},
    "mnist": {"linf": "0.3", "l2": "2", "l1": "10"},
    "fashion-mnist": {"linf": "0.1", "l2": "1", "l1": "5"},
    "*": {"linf": "8/255", "l2": "0.5", "l1": "12"},
}


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand and its flags to ``sub``."""
    from robustness.defenses.methods import METHODS

    tr = sub.add_parser("train", help="adversarial training; writes a checkpoint `evaluate --model` reads")
    tr.add_argument("--data", default="digits",
                    help="digits (default), mnist, fashion-mnist, cifar10, cifar100, svhn, or a .npz/.pt file; "
                         "trains on the train split and validates on the test split")
    tr.add_argument("--data-dir", default=None, help="where torchvision datasets live")
    tr.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    tr.add_argument("--n", type=int_type(1), default=None,
                    help="train on a seeded random subset of n training examples")
    tr.add_argument("--arch", default=None, help="architecture (default: the usual one for the dataset, "
                                                 "small-cnn for digits/MNIST, preact-resnet18 for CIFAR/SVHN)")
    tr.add_argument("--arch-kwargs", default=None, help="architecture arguments, e.g. width=32 (comma separated)")
    tr.add_argument("--method", default="pgd", choices=list(METHODS),
                    help="pgd (Madry et al.), fgsm-rs (Wong et al., with the catastrophic-overfitting guard), "
                         "trades (Zhang et al.) or standard")
    tr.add_argument("--eps", default=None,
                    help="training budget, fractions allowed (default: 0.1 Linf / 1 L2 / 2 L1 on digits, "
                         "8/255 / 0.5 / 12 on CIFAR)")
    tr.add_argument("--norm", default="linf", choices=list(NORMS))
    tr.add_argument("--steps", type=int_type(1), default=10, help="attack steps of pgd and trades (default 10)")
    tr.add_argument("--step-size", type=float_type("a number > 0", lambda v: v > 0), default=None,
                    help="attack step as a fraction of eps (default 2.5/steps; 1.25 for fgsm-rs)")
    tr.add_argument("--beta", type=float_type("a number >= 0", lambda v: v >= 0), default=6.0,
                    help="TRADES weight of the KL term (default 6)")
    tr.add_argument("--eps-warmup", type=int_type(0), default=0,
                    help="epochs of linearly growing budget before the full one")
    tr.add_argument("--epochs", type=int_type(1), default=30)
    tr.add_argument("--batch-size", type=int_type(1), default=128)
    tr.add_argument("--lr", type=float_type("a number > 0", lambda v: v > 0), default=0.1,
                    help="peak learning rate of the one-cycle schedule (SGD)")
    tr.add_argument("--weight-decay", type=float_type("a number >= 0", lambda v: v >= 0), default=5e-4)
    tr.add_argument("--eval-steps", type=int_type(1), default=10, help="PGD steps of the per-epoch validation attack")
    tr.add_argument("--eval-samples", type=int_type(1), default=512, help="validation examples attacked per epoch")
    tr.add_argument("--out", required=True, help="the model checkpoint to write (its training state goes to OUT.state)")
    again = tr.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT.state if it exists")
    again.add_argument("--overwrite", action="store_true",
                       help="replace an existing OUT and its training state (without it, or --resume, an existing "
                            "OUT or OUT.state is an error)")
    tr.add_argument("--seed", type=parse_seed, default=0)
    tr.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...")
    tr.add_argument("--threads", type=int_type(1, MAX_PROCESSES), default=None,
                    help="CPU threads for torch (default: torch's choice); 1 is fastest for small models on a busy "
                         "machine. A resumed run matches an uninterrupted one bit for bit at the same thread count")
    talk = tr.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="no progress bars, logs or table; one summary line")
    talk.add_argument("--verbose", action="store_true", help="also show the log lines of libraries (hidden by default)")
    add_nproc(tr, "trains on its shard under DistributedDataParallel; --batch-size is the global batch, split "
                   "evenly; rank 0 writes the checkpoints")


def _parse_kwargs(text: str | None) -> dict[str, int | float | str]:
    """``"width=32,depth=16"`` -> ``{"width": 32, "depth": 16}`` (ints, then floats, else strings)."""
    out: dict[str, int | float | str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"--arch-kwargs: expected KEY=VALUE pairs like width=32, got {part!r}")
        value = value.strip()
        parsed: int | float | str = value
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                continue
        out[key.strip()] = parsed
    return out


def _training_eps(text: str) -> float:
    """``--eps`` of ``train``: one budget (fractions allowed)."""
    eps = parse_epsilons(text)
    if len(eps) != 1:
        raise InputError(f"--eps: give one training budget, got {text!r}")
    return eps[0]


def _check_earlier_run(out: Path, state: Path, resume: bool, overwrite: bool, *, lead: bool) -> None:
    """Refuse to replace an earlier run's ``out`` or ``state`` unless ``overwrite`` (then the ``lead`` rank
    removes them, and the history log, before training); with ``resume``, refuse a model without a state."""
    from robustness.defenses.checkpointing import history_log_path

    if overwrite:
        if lead:
            for path in (out, state, history_log_path(state)):
                path.unlink(missing_ok=True)
        return
    if resume:
        if out.exists() and not state.exists():
            raise InputError(f"{out} exists but its training state {state} does not, so there is nothing to resume: "
                             "pass --overwrite to train a new model in its place, or choose another --out")
        return
    if out.exists() or state.exists():
        raise InputError(f"{_describe_earlier_run(out, state)}; pass --resume to continue it or --overwrite to "
                         "replace it")


def _describe_earlier_run(out: Path, state: Path) -> str:
    """``"<out> exists (a model trained for N epochs)"``, or what else of an earlier run is at ``out``/``state``."""
    from robustness.defenses.checkpointing import load_training_state

    if out.exists():
        try:
            meta = torch.load(out, map_location="cpu", weights_only=True).get("meta", {})
            epochs = int(meta["epochs_completed"])
        except Exception:  # noqa: BLE001 - not a model this command wrote: say only that it exists
            return f"{out} exists"
        return f"{out} exists (a model trained for {epochs} epoch{'s' if epochs != 1 else ''})"
    try:
        saved = load_training_state(state)
    except InputError:
        return f"{state} exists"
    done, total = int(saved["epoch"]), saved.get("epochs")
    return f"{state} exists (the training state of a run after {done}{f' of {total}' if total else ''} epochs)"


def _train(args: argparse.Namespace) -> int:
    """Run ``robustness train`` with parsed ``args``; the exit code (:class:`InputError` for bad flags).

    The flags are checked before any data is read (the numbers' ranges by argparse): ``--eps`` and that
    ``--out`` can be written."""
    if args.eps is not None:
        _training_eps(args.eps)
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise InputError(f"--out {out} is a directory: give the model file to write, e.g. {out / 'model.pt'}")
    check_writable(out, "--out", file=True)
    with torchrun_session(parse_device(args.device)) as (device, group):  # under torchrun: this rank's device
        return _train_run(args, out, device, group)


def _train_run(args: argparse.Namespace, out: Path, device: torch.device, group: ProcessGroup | None) -> int:
    """Build, train and save; ``group`` (under torchrun): DDP over its ranks, rank 0 writes and prints."""
    from torch.utils.data import DataLoader, DistributedSampler

    from robustness.defenses.trainer import AdversarialTrainer

    rank, world = (0, 1) if group is None else (group.rank, group.world_size)
    if args.batch_size % world:
        raise InputError(f"--batch-size {args.batch_size} is the global batch, split evenly over the {world} "
                         f"processes: use a multiple of {world}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)

    with naming("--data", args.data):
        train = datasets.load_dataset(args.data, split="train", data_dir=args.data_dir, download=args.download,
                                      n=args.n, seed=args.seed)
        test = datasets.load_dataset(args.data, split="test", data_dir=args.data_dir, download=args.download)
    arch = (args.arch if args.arch is not None else default_architecture(train.name)).lower()
    arch_kwargs: dict[str, int | float | str] = {"num_classes": train.num_classes,
                                                 "in_channels": int(train.input_shape[0])}
    if arch == "small-cnn":
        arch_kwargs["input_size"] = int(train.input_shape[-1])
    arch_kwargs.update(_parse_kwargs(args.arch_kwargs))
    with naming(*(("--arch-kwargs", args.arch_kwargs) if args.arch_kwargs is not None else ("--arch", arch))):
        model = NormalizedModel(build_architecture(arch, **arch_kwargs), train.mean, train.std)
    default_eps = DEFAULT_TRAIN_EPS.get(train.name, DEFAULT_TRAIN_EPS["*"])[args.norm]
    eps_text = args.eps if args.eps is not None else default_eps
    eps = _training_eps(eps_text)
    trainer = AdversarialTrainer(method=args.method, eps=eps, norm=args.norm, steps=args.steps,
                                 step_size=args.step_size, beta=args.beta, eps_warmup_epochs=args.eps_warmup,
                                 bounds=train.bounds, seed=args.seed, eval_steps=args.eval_steps,
                                 eval_samples=args.eval_samples)
    if group is None:
        loader = DataLoader(train.dataset, batch_size=args.batch_size, shuffle=True)
    else:  # each rank its shard, reshuffled every epoch (the trainer calls set_epoch)
        sampler = DistributedSampler(train.dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
        loader = DataLoader(train.dataset, batch_size=args.batch_size // world, sampler=sampler)
    val_loader = DataLoader(test.dataset, batch_size=256)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(loader),
                                                    pct_start=0.4, anneal_strategy="linear", cycle_momentum=False)
    state = out.with_name(out.name + ".state")
    _check_earlier_run(out, state, args.resume, args.overwrite, lead=rank == 0)
    start = time.perf_counter()
    history = trainer.fit(model, loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler,
                          scheduler_interval="batch", val_loader=val_loader, checkpoint=state, resume=args.resume,
                          device=device, progress=not args.quiet, distributed=group is not None)
    seconds = time.perf_counter() - start
    if rank:
        return 0  # rank 0 evaluates, writes the model and prints
    final = trainer.evaluate(model, val_loader, device=device, max_samples=None)
    argv = getattr(args, "argv", None)
    command = "robustness " + shlex.join(argv) if argv is not None else None
    loading.save_checkpoint(
        out, model, arch=arch, arch_kwargs=arch_kwargs, dataset=train.name, bounds=train.bounds,
        input_shape=train.input_shape,
        meta={
            "command": command,
            "training": f"adversarial ({args.method})" if args.method != "standard" else "standard (non-adversarial)",
            "method": args.method, "eps": eps, "eps_text": eps_text, "norm": args.norm, "steps": args.steps,
            "step_fraction": trainer.step_fraction, "beta": args.beta, "eps_warmup_epochs": args.eps_warmup,
            "epochs": args.epochs, "epochs_completed": len(history.records), "batch_size": args.batch_size,
            "processes": world,
            "lr": args.lr, "weight_decay": args.weight_decay, "seed": args.seed, "n_train": len(train),
            "optimizer": "SGD(momentum=0.9, nesterov=True)",
            "scheduler": "OneCycleLR(pct_start=0.4, anneal_strategy='linear', cycle_momentum=False), per batch",
            "stopped_early": history.stopped_early, "restored_epoch": history.restored_epoch,
            "test_clean_accuracy": round(final.clean_accuracy, 6),
            "test_robust_accuracy": round(final.robust_accuracy, 6),
            "robust_attack": f"PGD-{final.steps} {final.norm} eps={eps_text} (random start, 1 restart)",
            "test_split": f"{test.name} test ({final.n_examples} images)",
            # every epoch's training and validation time, across resumes (not this invocation's wall time)
            "train_seconds": round(sum(r.seconds + r.val_seconds for r in history.records), 1),
            "state_file": state.name, "threads": torch.get_num_threads(),
            "device": str(device),
            "torch_version": str(torch.__version__),
        },
    )
    if not args.quiet and history.records:
        print(f"\n{args.method} training of {arch} on {train.name} ({args.norm}, eps={eps_text})")
        print(history.table())
        if history.stopped_early:
            print(f"stopped early: {history.stop_reason}; kept the weights of epoch {history.restored_epoch}")
    print(f"{args.method}: test clean {100 * final.clean_accuracy:.1f}%, PGD-{final.steps} at eps={eps_text}: "
          f"{100 * final.robust_accuracy:.1f}% ({final.n_examples} examples, {len(history.records)} epochs, "
          f"{seconds:.1f} s) -> {out} (training state: {state})")
    return 0
