"""The exceptions the JSON Schema compiler raises; every module of this package and :mod:`.matcher` share them.

``GrammarError`` is the base (a ``ValueError``): the schema is bad, accepts nothing, or is too large.
``UnsupportedSchemaError`` names the keyword we refuse to ignore and where it is (a JSON pointer).
Re-exported by :mod:`realizar_ort.grammar.json_schema` and :mod:`realizar_ort.grammar.matcher`.
"""

from __future__ import annotations

__all__ = ["GrammarError", "GrammarTooLargeError", "UnsupportedSchemaError"]


class GrammarError(ValueError):
    """A schema that cannot become a grammar (bad, unsatisfiable, or too large)."""


class UnsupportedSchemaError(GrammarError):
    """A keyword or construct we cannot enforce; ``keyword`` names it, ``path`` is a JSON pointer."""

    def __init__(self, keyword: str, path: str, reason: str = "not supported") -> None:
        self.keyword = keyword
        self.path = path or "#"
        super().__init__(f"unsupported JSON Schema keyword {keyword!r} at {self.path}: {reason}")


class GrammarTooLargeError(GrammarError):
    """Compilation exceeded its state budget or deadline."""
