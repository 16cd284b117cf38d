"""Python functions written as source text from a schema and compiled once.

``broker/dumping.py`` and ``broker/loading.py`` write, for one marshmallow schema, the
function that does just what that schema's fields say. This is the shared part: the source
being written, the values its names stand for, and the compiling. The source is registered
with ``linecache`` (tracebacks and profilers show its lines) and kept as ``__source__``.
"""

from __future__ import annotations

import itertools
import keyword
import linecache
from collections.abc import Callable
from typing import Any


class Unsupported(Exception):
    """The schema uses something the generator does not know: marshmallow does it all."""


def overrides(obj: object, *names: str) -> bool:
    """Whether ``obj`` itself (not its class) replaces one of these methods."""
    return any(name in vars(obj) for name in names)


class Source:
    """Functions being written: their lines, and the values their global names stand for."""

    _files = itertools.count()

    def __init__(self, label: str, **names: Any) -> None:
        self.label = label
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = dict(names)
        self.written: dict[int, str] = {}
        """Functions already written, by the ``id`` of what they were written for."""
        self._names = itertools.count()

    def bind(self, value: object, hint: str = "c") -> str:
        """A global name of the generated code standing for ``value``."""
        name = self.local(f"_{hint}")
        self.namespace[name] = value
        return name

    def local(self, hint: str) -> str:
        """A fresh name (for a local variable or a function)."""
        return f"{hint}{next(self._names)}"

    def function(self, name: str, argument: str, body: list[str]) -> None:
        """Add ``def name(argument):`` with ``body`` (lines already indented one level)."""
        self.lines += [f"def {name}({argument}):", *body, ""]

    def compile(self, name: str) -> Callable[..., Any]:
        """Compile every function written and answer the one called ``name``."""
        text = "\n".join(self.lines)
        filename = f"<generated {self.label} #{next(Source._files)}>"
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        exec(compile(text, filename, "exec"), self.namespace)  # noqa: S102 (our own source)
        function: Callable[..., Any] = self.namespace[name]
        function.__source__ = text  # type: ignore[attr-defined]
        return function


def attribute(obj: str, name: str) -> str:
    """Source reading attribute ``name`` of ``obj`` (``getattr`` when not an identifier)."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"{obj}.{name}"
    return f"getattr({obj}, {name!r})"
