"""Shared parameter documentation (dynstab._docs): filled once, complete in help(), checked."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import dynstab
from dynstab._docs import DocFragments
from dynstab.criteria import (
    alignment_bound,
    frobenius_bound,
    lyapunov_exponent,
    mm23_bound_15,
    mm23_bound_16,
    rank_one_bound,
    second_moment_growth,
    trace_bound,
    wme18_sufficient_lr,
)
from dynstab.criteria._docs import criteria_docs

docs = DocFragments(
    x="x: The abscissa.",
    pair="""
        a: First.
        b: Second, a longer entry
            on two lines.
        """,
)


def test_fragment_is_filled_with_the_placeholders_indentation() -> None:
    @docs
    def f(x: float, a: int, b: int) -> None:
        """Summary.

        Args:
            %(x)s
            %(pair)s
        """

    assert inspect.getdoc(f) == (
        "Summary.\n\nArgs:\n    x: The abscissa.\n    a: First.\n"
        "    b: Second, a longer entry\n        on two lines."
    )

    class Holder:
        @docs
        def method(self, x: float) -> None:
            """Summary.

            Args:
                %(x)s
            """

    assert inspect.getdoc(Holder.method) == "Summary.\n\nArgs:\n    x: The abscissa."


def test_unknown_or_inline_placeholder_is_refused_at_definition() -> None:
    with pytest.raises(KeyError, match=r"no docstring fragment 'y'; known: \['pair', 'x'\]"):

        @docs
        def f(y: float) -> None:
            """Summary.

            Args:
                %(y)s
            """

    with pytest.raises(ValueError, match="must stand on a line of its own"):

        @docs
        def g(x: float) -> None:
            """Summary with %(x)s inline."""


def test_args_must_document_exactly_the_signature_in_order() -> None:
    with pytest.raises(ValueError, match=r"must document its parameters \['x', 'z'\] in order"):

        @docs
        def f(x: float, z: float) -> None:
            """Summary.

            Args:
                %(x)s
            """

    with pytest.raises(ValueError, match=r"\['b', 'a'\] in order"):

        @docs
        def g(b: int, a: int) -> None:
            """Summary.

            Args:
                %(pair)s
            """

    @docs
    def h(*args: int, **kwargs: int) -> None:
        """Summary.

        Args:
            *args: Positional.
            **kwargs: Keywords.
        """

    assert "**kwargs: Keywords." in (h.__doc__ or "")


def test_no_docstring_is_left_alone() -> None:
    def f() -> None:
        pass

    assert docs(f) is f
    assert f.__doc__ is None


@pytest.mark.parametrize(
    "fn",
    [trace_bound, frobenius_bound, mm23_bound_16, mm23_bound_15, wme18_sufficient_lr],
)
def test_one_call_bounds_show_the_complete_args(fn: object) -> None:
    doc = inspect.getdoc(fn) or ""
    for entry in criteria_docs["gram_bound_args"].split("\n"):
        assert "\n    " + entry + "\n" in doc
    assert list(inspect.signature(fn).parameters)[:3] == ["K", "batch_size", "sampling"]


def test_entries_written_once_read_the_same_everywhere() -> None:
    k_line = "    K: Gram matrix K = JJᵀ/n, shape ``(nC, nC)``.\n"
    coords = "    coords: Precomputed :func:`~dynstab.criteria.gram_coordinates` of K.\n"
    for fn in (alignment_bound, rank_one_bound, lyapunov_exponent, second_moment_growth):
        doc = inspect.getdoc(fn) or ""
        assert k_line in doc
        assert coords in doc


def _library_docstrings() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    names = [m.name for m in pkgutil.walk_packages(dynstab.__path__, "dynstab.")]
    for name in ["dynstab", *names]:
        if ".plotting" in name or ".cli" in name:
            continue
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if getattr(obj, "__module__", None) != name:
                continue
            objs = [obj]
            if inspect.isclass(obj):
                objs += [
                    getattr(v, "fget", None) or getattr(v, "__func__", v)
                    for v in vars(obj).values()
                ]
            for o in objs:
                doc = getattr(o, "__doc__", None)
                if isinstance(doc, str):
                    found.append((f"{name}.{attr}", doc))
    return found


def test_no_placeholder_is_left_unfilled_in_the_library() -> None:
    pattern = re.compile(r"^\s*%\(\w+\)s\s*$", re.MULTILINE)
    left = [where for where, doc in _library_docstrings() if pattern.search(doc)]
    assert not left, f"docstrings with an unfilled %(name)s (missing @DocFragments?): {left}"
