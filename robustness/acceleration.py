"""Options that make big models cheaper to attack: bfloat16 autocast, channels_last, torch.compile.

Each is off by default; :func:`accelerated` turns on the ones asked for, for the duration of an
evaluation, and yields the module the attacks call. The user's model is never replaced and comes
back exactly as it was: parameters and buffers bit-identical, with the same strides, on the same
device, in the same mode, with no hooks added.

* ``amp="bf16"``: the model runs under ``torch.autocast(dtype=torch.bfloat16)`` (Micikevicius et
  al. 2018, "Mixed Precision Training", for autocast; Kalamkar et al. 2019, "A Study of BFLOAT16
  for Deep Learning Training", for the format). The wrapper returns float32 logits, so attacks
  compute their losses and their gradients with respect to the (float32) input in float32; only
  the model's own matrix products and convolutions run in bfloat16. Why bfloat16 and not
  float16: attacks drive logits and gradients to extremes on purpose (margin losses, saturated
  softmax, tiny steps of large gradients) and none of them does loss scaling; float16, with its
  5-bit exponent, overflows above 65504 and flushes small gradients to zero, which makes an
  attack silently weaker (a false robustness claim). bfloat16 keeps float32's exponent range
  and only loses mantissa: predictions near a decision boundary can flip, so robust accuracy
  may move by a few samples (``benchmarks/bench_acceleration.py`` measures by how much).
  Robust accuracy is then that of the model *run in bfloat16*: the runner verifies every
  adversarial example with the same accelerated module.
* ``channels_last=True``: 4-D inputs are converted to ``torch.channels_last`` in the wrapper's
  forward (other ranks pass unchanged), and the model's 4-D parameters and buffers are
  converted for the duration (in place, as ``Module.to`` does: the same ``Parameter`` objects),
  then given back their original tensors on exit. Faster convolutions on GPUs with tensor cores
  and with oneDNN on CPUs; values are unchanged, only the memory layout.
* ``compile=True``: ``torch.compile(model, dynamic=True)``, inside the autocast/channels_last
  wrapper when there is one (the user's model is not replaced: the compiled module wraps it).
  Attacks shrink their working batch as samples fall (early stop), so the batch dimension is
  dynamic from the first call instead of one compilation per size; torch still specializes
  batch size 1 and, on the CPU, a few size ranges where oneDNN picks other kernels, each with
  and without autograd (up to 8 graphs on the CPU, compiled at their first call: seconds to a
  minute each; inductor needs a C compiler on the CPU). If ``torch.compile``, a compiled call,
  or the first compiled backward fails while the eager model runs, the rest of the evaluation
  runs uncompiled: a :class:`RobustnessWarning` says so and :attr:`AcceleratedModule.notes`
  keeps the reason. An error that the eager model raises too is the model's own and is raised.
  The first gradient call also runs one compiled forward and backward on a copy of its input,
  since torch raises a failure to compile the backward only in the caller's backward. The
  parameters' ``requires_grad`` is off for the duration (restored on exit): a compiled backward
  computes the gradient of every input that requires it, parameters included, which attacks
  never use and which doubled the cost of a compiled PGD step on the CPU. Compiled code is kept
  by torch itself per code object (the model's ``forward``), so a later evaluation of the same
  architecture reuses it; the compiled module is dropped on exit.

Shapes: the yielded module maps ``(N, ...)`` float32 inputs to ``(N, classes)`` logits, like the
model. Nothing global is changed: autocast is a context entered per call, no global flag, seed
or torch config is touched.

Example::

    with accelerated(model, amp="bf16", channels_last=True, compile=False, device=x.device) as fast:
        adv = PGD(steps=10)(fast, x, y, eps=8 / 255)

or, through the runner and the CLI: ``robustness.evaluate(..., amp="bf16", channels_last=True,
compile=True)``; ``robustness evaluate --amp bf16 --channels-last --compile``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from robustness.errors import InputError, RobustnessWarning
from robustness.validation import check_flag

__all__ = ["AMP_DTYPES", "AcceleratedModule", "accelerated", "check_amp"]

log = logging.getLogger(__name__)

#: valid values of ``amp`` and the autocast dtype of each
AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16}


def check_amp(amp: object) -> str | None:
    """``amp`` normalized (``None`` or ``"bf16"``); anything else is an :class:`InputError`."""
    if amp is None:
        return None
    if isinstance(amp, str) and amp.strip().lower() in AMP_DTYPES:
        return amp.strip().lower()
    raise InputError(
        f"amp={amp!r} is not supported: use one of {', '.join(repr(k) for k in AMP_DTYPES)} or None (full precision); "
        f"float16 is not offered because attacks do no loss scaling and large logits or gradients overflow it"
    )


class _Precision(nn.Module):
    """Runs ``model`` under bfloat16 autocast and/or on channels_last inputs; float32 logits out."""

    def __init__(self, model: nn.Module, amp: str | None, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.dtype = AMP_DTYPES[amp] if amp is not None else None
        self.channels_last = channels_last

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.model(x)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.model(x)
        # losses and input gradients in float32: the backward of this cast returns float32 gradients
        return out.float() if isinstance(out, Tensor) and out.dtype == self.dtype else out


class AcceleratedModule(nn.Module):
    """The module an evaluation runs: ``eager`` (the model, or its autocast/channels_last wrapper),
    compiled when asked, falling back to ``eager`` for good if compilation fails.

    Attributes:
        eager: the uncompiled module.
        compiled: ``eager`` with the model compiled; ``None`` when not asked for or after a failure.
        notes: what happened that a report should say (a compilation failure and its reason).
        options: the options in force, e.g. ``{"amp": "bf16", "channels_last": True, "compile": True}``.
    """

    def __init__(self, eager: nn.Module, compiled: nn.Module | None, options: dict[str, Any]) -> None:
        super().__init__()
        self.eager = eager
        self.compiled = compiled
        self.options = dict(options)
        self.notes: list[str] = []
        self._backward_checked = False

    def forward(self, x: Tensor) -> Tensor:
        if self.compiled is None:
            return self.eager(x)
        try:
            if not self._backward_checked and torch.is_grad_enabled() and x.requires_grad:
                self._check_backward(x)
            return self.compiled(x)
        except torch.cuda.OutOfMemoryError:
            raise  # the runner halves the batch; not a compilation problem
        except Exception as err:  # noqa: BLE001 - any compiler failure; the eager call below tells them apart
            failure = err
        out = self.eager(x)  # raises the model's own error if the model itself is at fault
        self._give_up(f"a compiled call failed ({type(failure).__name__}: {_first_line(failure)})", failure)
        return out

    def _check_backward(self, x: Tensor) -> None:
        """One compiled forward and backward on a copy of ``x``: with dynamic shapes torch compiles
        the backward lazily and raises its failures in the caller's backward, out of reach of the
        fallback (and compiled backwards free their buffers, so the caller's graph can't be reused)."""
        probe = x.detach().requires_grad_(True)
        out = self.compiled(probe)  # type: ignore[misc]
        if _needs_grad(out):
            torch.autograd.grad(out.sum(), probe, allow_unused=True)
        self._backward_checked = True

    def _give_up(self, what: str, err: BaseException | None) -> None:
        self.compiled = None
        note = f"compile=True: {what}; the evaluation went on uncompiled (eager), only slower"
        self.notes.append(note)
        self.options["compile"] = False
        log.warning("%s", note)
        if err is not None:
            log.debug("torch.compile failure", exc_info=err)
        warnings.warn(note, RobustnessWarning, stacklevel=3)


def _needs_grad(out: object) -> bool:
    return isinstance(out, Tensor) and out.requires_grad and out.is_floating_point()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else "no message"


@contextlib.contextmanager
def _formats_kept(model: nn.Module) -> Iterator[None]:
    """Convert the model's 4-D parameters and buffers to channels_last for the block, then give
    each back its original tensor (same storage, strides and values)."""
    saved: list[tuple[Tensor, Tensor]] = []
    seen: set[int] = set()
    try:
        for t in [*model.parameters(), *model.buffers()]:
            if id(t) in seen or t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last):
                continue
            seen.add(id(t))
            original = t.data  # an alias: the original storage, strides and offset
            saved.append((t, original))
            t.data = original.contiguous(memory_format=torch.channels_last)
        yield
    finally:
        for t, original in reversed(saved):
            t.data = original


@contextlib.contextmanager
def _parameter_grads_off(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on every parameter for the block, then each flag as it was."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _compile(model: nn.Module, amp: str | None, channels_last: bool) -> tuple[nn.Module | None, str | None]:
    """``torch.compile(model)``, inside the autocast/channels_last wrapper when there is one.

    The model is compiled, not the wrapper: torch keeps compiled code per code object (here the
    model's own ``forward``) with a limit of 8 variants each, so a wrapper shared by every model
    would let one evaluation's graphs crowd out the next one's.
    """
    try:
        compiled = torch.compile(model, dynamic=True)
        return (_Precision(compiled, amp, channels_last) if amp is not None or channels_last else compiled), None
    except Exception as err:  # noqa: BLE001 - e.g. an unsupported platform or Python version
        log.debug("torch.compile failure", exc_info=err)
        return None, f"torch.compile failed ({type(err).__name__}: {_first_line(err)})"


@contextlib.contextmanager
def accelerated(
    model: nn.Module,
    *,
    amp: str | None,
    channels_last: bool,
    compile: bool,
    device: torch.device | str,
) -> Iterator[AcceleratedModule]:
    """The module to run for an evaluation of ``model`` on ``device``, with the options asked for.

    Args:
        model: the user's model (already on ``device`` and in eval mode: the runner sees to it).
        amp: ``"bf16"`` (bfloat16 autocast, float32 logits out) or ``None``.
        channels_last: convert 4-D inputs, parameters and buffers to ``torch.channels_last``.
        compile: ``torch.compile`` the module (``dynamic=True``); eager, with a warning, if that fails.
        device: where the evaluation runs; checked to support bfloat16 autocast when ``amp`` is set.

    Yields:
        An :class:`AcceleratedModule`; on exit ``model``'s parameters and buffers are its original
        tensors again.

    Raises:
        InputError: an unknown ``amp``, a non-boolean flag, or a device without bfloat16 autocast.
    """
    amp = check_amp(amp)
    channels_last = check_flag("channels_last", channels_last)
    compile = check_flag("compile", compile)
    device = torch.device(device)
    if amp is not None:
        if not torch.amp.is_autocast_available(device.type):
            raise InputError(f"amp={amp!r}: autocast is not available on {device.type}; run without amp")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            log.warning("amp='bf16': this GPU has no native bfloat16; it is emulated and may be slower than float32")
    options = {"amp": amp, "channels_last": channels_last, "compile": compile}
    with contextlib.ExitStack() as stack:
        if channels_last:
            stack.enter_context(_formats_kept(model))
        if compile:
            stack.enter_context(_parameter_grads_off(model))
        eager = _Precision(model, amp, channels_last) if amp is not None or channels_last else model
        compiled, failure = _compile(model, amp, channels_last) if compile else (None, None)
        fast = AcceleratedModule(eager, compiled, options)
        if failure is not None:
            fast._give_up(failure, None)
        yield fast
