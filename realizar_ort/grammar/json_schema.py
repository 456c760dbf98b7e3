"""JSON Schema -> a byte-level pushdown automaton the token-mask kernel runs (the public entry).

Design (see also :mod:`realizar_ort.grammar.matcher`):

- Every schema node becomes an NFA fragment over bytes (Thompson construction). Sub-schemas are inlined,
  so ``anyOf`` alternatives are merged by determinisation; only a *recursive* ``$ref`` (one already being
  inlined, e.g. a tree, or the nesting of generic JSON) becomes a **call**: the caller pushes a return state
  and jumps to the callee rule's start; a rule in an accepting state returns (pops) on a byte it cannot
  consume. Each rule is determinised separately; all DFA states share one dense ``[states, 256]`` table.
- String length bounds use one **counter** (strings never nest): an edge flagged ``RESET`` (opening quote)
  zeroes it, ``INC`` (a completed character) needs ``counter < cmax[state]``, ``CLOSE`` (closing quote)
  needs ``counter >= cmin[state]``. So ``maxLength: 5000`` costs a handful of states, not 5000.
- Output is compact by default (``whitespace=0``); ``whitespace=n`` allows up to ``n`` bytes of
  ``[ \\t\\n]`` at each structural point, never more. Known properties come in schema order; a property
  missing from ``required`` may be skipped; extra keys (where allowed) come after them.
  ``additionalProperties`` absent means allowed, as the spec says; ``strict=True`` (OpenAI's strict mode)
  makes it ``false`` wherever ``properties`` is given (see :mod:`.objects`).
- Annotations and unknown keywords are ignored (:mod:`.keywords`). Refuse, never ignore: an assertion keyword
  we do not enforce raises :class:`UnsupportedSchemaError` naming it. Compilation has a state budget and a
  deadline that every stage checks (regexes are parsed and sized by :mod:`.regex_parse` before building).

Where each part lives:

- :mod:`.schema_errors`: ``GrammarError``, ``UnsupportedSchemaError``, ``GrammarTooLargeError``.
- :mod:`.schema_automaton`: the counter flags, :class:`Automaton`, the NFA, and determinisation.
- :mod:`.schema_compiler`: the schema walk (keywords, ``$ref``/``$defs``, refusals) and
  :func:`compile_schema_automaton`.
- :mod:`.schema_composition`: ``allOf`` intersection and ``oneOf`` disjointness.
- :mod:`.schema_strings`, :mod:`.schema_regex` (+ ``regex_parse``), :mod:`.schema_numbers`, ``objects``, ``keywords``: string contents and property
  keys, ``pattern``/``format``, numeric ranges.

Cost: pure Python, roughly 10-20 us per DFA state; callers cache the result (see ``compile_json_schema``).
"""

from __future__ import annotations

from .automaton import CLOSE, INC, RESET, ROOM, UNBOUNDED, Automaton
from .compiler import compile_schema_automaton
from .errors import GrammarError, GrammarTooLargeError, UnsupportedSchemaError

__all__ = [
    "CLOSE",
    "INC",
    "RESET",
    "ROOM",
    "UNBOUNDED",
    "Automaton",
    "GrammarError",
    "GrammarTooLargeError",
    "UnsupportedSchemaError",
    "compile_schema_automaton",
]
