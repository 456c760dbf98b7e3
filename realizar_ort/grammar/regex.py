r"""``pattern`` and ``format`` for strings: a regex (via interegular) becomes NFA edges over canonical bytes.

``FORMAT_PATTERNS`` maps each supported ``format`` to an anchored regex (a format is never a substring
match). A ``pattern`` is a search, as JSON Schema says: unless it starts with ``^`` / ends with ``$`` it
is padded with ``[\s\S]*``. interegular builds a character DFA (cached per pattern for the process);
each of its characters is emitted in its canonical JSON escape form (:func:`.schema_strings.canonical`),
so a pattern constrains the decoded string while the automaton reads JSON bytes. Regex syntax
interegular cannot handle is refused with :class:`UnsupportedSchemaError` naming ``pattern``/``format``.

Cost: parsing is cached (256 patterns); emitting costs one pass over the regex DFA. Not thread-safe on a
shared :class:`~.schema_automaton.Nfa`; the cache itself is thread-safe (``functools.lru_cache``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .automaton import INC, ROOM, Nfa
from .errors import UnsupportedSchemaError
from .strings import ASCII_CANONICAL, byte_ranges, canonical, multibyte_char_edges

__all__ = ["FORMAT_PATTERNS", "regex_body"]

FORMAT_PATTERNS = {
    "date": r"(000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3})-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)|02-(0[1-9]|1\d|2[0-8]))",
    "time": r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+",
    "ipv4": r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
}
FORMAT_PATTERNS["date-time"] = FORMAT_PATTERNS["date"] + "T" + FORMAT_PATTERNS["time"]


def regex_body(nfa: Nfa, body: int, pattern: str, anchored: bool, seg: tuple[int, int] | None,
               path: str, keyword: str, tick: Callable[[], None]) -> list[int]:
    """Edges from ``body`` for string content matching ``pattern``; returns the accepting NFA states.

    ``anchored`` False applies JSON Schema search semantics; ``keyword`` names the refusal; ``tick`` is
    called once per regex DFA state (the compiler's deadline check).
    """
    from interegular.fsm import anything_else

    if not anchored:
        core = pattern
        if core.startswith("^"):
            core = core[1:]
        else:
            core = r"[\s\S]*(" + core + ")" if core else core
        if core.endswith("$") and (len(core) - 1 - len(core[:-1].rstrip("\\"))) % 2 == 0:
            core = core[:-1]
        else:
            core = "(" + core + r")[\s\S]*" if core else r"[\s\S]*"
        pattern = core
    try:
        fsm = _regex_fsm(pattern)
    except Exception as exc:  # interegular raises several types for unsupported syntax
        raise UnsupportedSchemaError(keyword, path, f"regex {pattern!r} cannot be compiled: {exc}") from exc
    inc = INC if seg else 0
    by_tk = fsm.alphabet.by_transition
    explicit = {c for chars in by_tk.values() for c in chars if c is not anything_else}
    non_ascii = any(ord(c) > 0x7F for c in explicit)
    states = {q: (body if q == fsm.initial else nfa.state(seg)) for q in fsm.map}
    ends = []
    for q, row in fsm.map.items():
        tick()
        src = states[q]
        prefix_states: dict[bytes, int] = {}
        for tk, dst in row.items():
            target = states[dst]
            chars = by_tk[tk]
            encodings = []
            for c in chars:
                if c is anything_else:
                    if non_ascii:
                        raise UnsupportedSchemaError(keyword, path, "negated classes mixed with non-ASCII characters")
                    encodings += [ASCII_CANONICAL[o] for o in range(0x80) if chr(o) not in explicit]
                    multibyte_char_edges(nfa, src, target, seg, inc)
                else:
                    encodings.append(canonical(c))
            singles = sorted(enc[0] for enc in encodings if len(enc) == 1)
            for lo, hi in byte_ranges(singles):
                nfa.edge(src, lo, hi, target, inc)
            for enc in encodings:
                if len(enc) == 1:
                    continue
                cur = src
                for i in range(len(enc) - 1):
                    key = enc[: i + 1]
                    if key not in prefix_states:
                        prefix_states[key] = nfa.state(seg)
                        nfa.edge(cur, enc[i], enc[i], prefix_states[key], ROOM if seg and i == 0 else 0)
                    cur = prefix_states[key]
                nfa.edge(cur, enc[-1], enc[-1], target, inc)
        if q in fsm.finals:
            ends.append(src)
    return ends


@functools.lru_cache(maxsize=256)
def _regex_fsm(pattern: str) -> Any:
    """interegular's DFA for a regex (cached: formats and repeated patterns parse once per process)."""
    import interegular

    return interegular.parse_pattern(pattern).to_fsm()
