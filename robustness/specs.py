"""Attack specs as text: ``"name"`` or ``"name(key=value, ...)"``, for the CLI and preset strings.

``parse_spec("apgd-ce(steps=200, restarts=3)")`` -> ``("apgd-ce", {"steps": 200, "restarts": 3})``.
Values are Python literals read with :func:`ast.literal_eval` (numbers, strings, ``True``/``False``,
``None`` and tuples of them); anything else is an :class:`~robustness.errors.InputError` that says
how to write it.
"""

from __future__ import annotations

import ast

from robustness.errors import InputError

__all__ = ["parse_spec", "is_literal", "LITERALS"]

LITERALS = "numbers, strings, True/False, None, or tuples of them"


def is_literal(value: object) -> bool:
    """``value`` is a number, string, bool, ``None`` or a tuple of those."""
    if isinstance(value, tuple):
        return all(is_literal(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def parse_spec(spec: str, *, what: str = "attack", example: str = "pgd(steps=40, restarts=5)") -> tuple[str, dict]:
    """Split ``"name(key=value, ...)"`` into the name and its settings.

    Args:
        spec: the text; a bare name has no settings.
        what: what the spec names, for messages (``"attack"``, ``"ART attack"``).
        example: a correct spec to show in messages.
    """
    usage = f"write NAME or NAME(key=value, ...), e.g. {example}"
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"empty {what}: {usage}")
    name, paren, rest = spec.strip().partition("(")
    name = name.strip()
    if not name or any(c in name for c in " ,)=\t"):
        raise InputError(f"cannot read the {what} {spec!r}: {usage}")
    if not paren:
        return name, {}
    rest = rest.rstrip()
    if not rest.endswith(")"):
        raise InputError(f"cannot read the {what} {spec!r}: the settings must end with ')'; {usage}")
    try:
        node = ast.parse(f"_({rest[:-1]})", mode="eval").body
    except SyntaxError as err:
        raise InputError(f"cannot read the {what} {spec!r} ({err.msg}): {usage}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.func.id != "_":
        raise InputError(f"cannot read the {what} {spec!r}: {usage}")
    if node.args:
        raise InputError(f"{what} {spec!r}: settings must be named (key=value); {usage}")
    settings: dict[str, object] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise InputError(f"{what} {spec!r}: '**' is not allowed; {usage}")
        if kw.arg in settings:
            raise InputError(f"{what} {spec!r}: setting {kw.arg!r} is given twice")
        try:
            value = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            value = ...  # not a literal
        if not is_literal(value):
            raise InputError(f"{what} {spec!r}: the value of {kw.arg} ({ast.unparse(kw.value)}) must be {LITERALS}")
        settings[kw.arg] = value
    return name, settings
