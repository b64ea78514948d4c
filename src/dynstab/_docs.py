"""Shared parameter documentation: an Args entry written once, filled into every docstring.

Several public functions take the same parameters with the same meaning (the one-call Gram
criteria all take ``K``, ``batch_size``, ``sampling`` and ``outputs``). Each keeps its own
``def``, signature, summary, formula, Example and References; the entries they share are
written once, as named fragments of a :class:`DocFragments`, and a docstring line that holds
only ``%(name)s`` is replaced by that fragment when the function is defined, so ``help()``,
Sphinx and doctest see the complete docstring. This is the scheme of matplotlib's
``_docstring.interpd``, pandas' ``@doc`` and scipy's ``_lib.doccer``, with two checks made at
import time: an unknown ``%(name)s`` raises, and after filling, the ``Args:`` section must
document exactly the function's parameters (the check ruff's D417 makes on the source, which
cannot see a placeholder).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DocFragments"]

F = TypeVar("F", bound=Callable[..., object])

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_OWN_LINE = re.compile(r"^(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*$")
_ENTRY = re.compile(r"^(?P<name>\*{0,2}\w+)(?: \([^)]*\))?:")


class DocFragments:
    """Named docstring fragments and a decorator that fills them into docstrings.

    A fragment is a block of docstring text written without indentation (its continuation
    lines indented by four spaces, as in a Google ``Args:`` entry). Decorating a function
    replaces each docstring line that holds only ``%(name)s`` by the fragment ``name``, every
    line of it indented like the placeholder.

    Args:
        **fragments: The fragments by name.

    Example:
        >>> docs = DocFragments(x="x: The abscissa.", y="y: The ordinate.")
        >>> @docs
        ... def norm(x: float, y: float) -> float:
        ...     '''Return √(x² + y²).
        ...
        ...     Args:
        ...         %(x)s
        ...         %(y)s
        ...     '''
        ...     return (x * x + y * y) ** 0.5
        >>> print(inspect.getdoc(norm))
        Return √(x² + y²).
        <BLANKLINE>
        Args:
            x: The abscissa.
            y: The ordinate.
    """

    def __init__(self, **fragments: str) -> None:
        self._fragments = {name: inspect.cleandoc(text) for name, text in fragments.items()}

    def __getitem__(self, name: str) -> str:
        """The fragment ``name``, unindented."""
        return self._fragments[name]

    def __call__(self, fn: F) -> F:
        """Fill the placeholders of ``fn``'s docstring and check its ``Args:`` section.

        Raises:
            KeyError: If a placeholder names no fragment.
            ValueError: If a placeholder does not stand on a line of its own, or the filled
                ``Args:`` section does not document exactly the parameters of ``fn``.
        """
        if fn.__doc__ is None:  # python -OO strips docstrings: nothing to fill
            return fn
        where = getattr(fn, "__qualname__", repr(fn))
        fn.__doc__ = self.fill(fn.__doc__, where)
        documented = _documented_args(fn.__doc__)
        if documented is not None:
            wanted = [
                ("*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else "")
                + p.name
                for p in inspect.signature(fn).parameters.values()
                if p.name not in ("self", "cls")
            ]
            if documented != wanted:
                raise ValueError(
                    f"the Args section of {where} must document its parameters {wanted} in "
                    f"order; it documents {documented}. Fix the docstring or its fragments."
                )
        return fn

    def fill(self, doc: str, where: str = "a docstring") -> str:
        """Return ``doc`` with every ``%(name)s`` line replaced by the fragment ``name``.

        Args:
            doc: The docstring as written (indented as in the source).
            where: What the docstring belongs to, for the error messages.

        Returns:
            The filled docstring.

        Raises:
            KeyError: If a placeholder names no fragment.
            ValueError: If a placeholder does not stand on a line of its own.
        """
        out: list[str] = []
        for line in doc.split("\n"):
            own = _OWN_LINE.match(line)
            if own is None:
                if _PLACEHOLDER.search(line):
                    raise ValueError(
                        f"{where}: a docstring placeholder must stand on a line of its own; "
                        f"got {line.strip()!r}."
                    )
                out.append(line)
                continue
            name = own["name"]
            if name not in self._fragments:
                raise KeyError(
                    f"{where}: no docstring fragment {name!r}; known: {sorted(self._fragments)}."
                )
            indent = own["indent"]
            out.extend(indent + text if text else "" for text in self._fragments[name].split("\n"))
        return "\n".join(out)


def _documented_args(doc: str) -> list[str] | None:
    """The parameter names of a Google ``Args:`` section, in order (None without one)."""
    lines = inspect.cleandoc(doc).split("\n")
    try:
        start = lines.index("Args:")
    except ValueError:
        return None
    names: list[str] = []
    entry_indent: int | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break
        if entry_indent is None:
            entry_indent = indent
        if indent == entry_indent:
            entry = _ENTRY.match(line.strip())
            if entry is None:
                raise ValueError(f"not a Google Args entry: {line.strip()!r}.")
            names.append(entry["name"])
    return names
