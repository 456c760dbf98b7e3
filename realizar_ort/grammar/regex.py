r"""``pattern`` and ``format`` for strings: a regex becomes NFA edges over canonical JSON-string bytes.

``FORMAT_PATTERNS`` maps each supported ``format`` to an anchored regex (a format is never a substring
match). A ``pattern`` is a search, as JSON Schema says: a top-level branch not starting with ``^`` / ending
with ``$`` is padded with any characters. :mod:`.regex_parse` parses the ECMA-262 syntax into a tree of
code-point sets; :class:`_Builder` writes it into the compiler's NFA (Thompson construction), each
character in its canonical JSON escape form (:func:`.strings.canonical`), so a pattern constrains the
decoded string while the automaton reads JSON bytes; the compiler's subset construction determinises it.
Nothing here runs outside the compile budget: the tree's size (repeats multiplied) is checked against
``MAX_PATTERN_STATES`` before anything is built, every node built ticks the deadline. Syntax we cannot
enforce is refused with :class:`UnsupportedSchemaError` naming ``pattern``/``format``.

Cost: linear in the pattern and the states it needs. Not thread-safe on a shared :class:`~.automaton.Nfa`.
"""

from __future__ import annotations

from collections.abc import Callable

from .automaton import INC, ROOM, Nfa
from .errors import UnsupportedSchemaError
from .regex_parse import RegexUnsupported, estimate_states, parse_regex
from .strings import ASCII_CANONICAL, byte_ranges, multibyte_char_edges

__all__ = ["FORMAT_PATTERNS", "STANDARD_FORMATS", "regex_body"]

FORMAT_PATTERNS = {
    "date": r"(000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3})-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)|02-(0[1-9]|1\d|2[0-8]))",
    "time": r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+",
    "ipv4": r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
}
FORMAT_PATTERNS["date-time"] = FORMAT_PATTERNS["date"] + "T" + FORMAT_PATTERNS["time"]
# RFC 3986, a strict subset (no IP-literal hosts): what is accepted is a URI for any validator
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SEGMENT_NZ = rf"{_PCHAR}+"
_HOST = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_AUTHORITY = rf"(?:(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*@)?{_HOST}(?::[0-9]*)?"
_TAIL = rf"(?:\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?"
_HIER = rf"(?://{_AUTHORITY}(?:/{_PCHAR}*)*|/(?:{_SEGMENT_NZ}(?:/{_PCHAR}*)*)?|{_SEGMENT_NZ}(?:/{_PCHAR}*)*)?"
_NOSCHEME_SEG = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}@]|{_PCT})+"
FORMAT_PATTERNS["uri"] = rf"[A-Za-z][A-Za-z0-9+.\-]*:{_HIER}{_TAIL}"
FORMAT_PATTERNS["uri-reference"] = (rf"(?:{FORMAT_PATTERNS['uri']}|(?://{_AUTHORITY}(?:/{_PCHAR}*)*|/(?:{_SEGMENT_NZ}"
                                    rf"(?:/{_PCHAR}*)*)?|{_NOSCHEME_SEG}(?:/{_PCHAR}*)*)?{_TAIL})")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
FORMAT_PATTERNS["hostname"] = rf"{_LABEL}(?:\.{_LABEL})*"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{FORMAT_PATTERNS['ipv4']})"
FORMAT_PATTERNS["ipv6"] = "|".join([
    rf"(?:{_H16}:){{6}}{_LS32}", rf"::(?:{_H16}:){{5}}{_LS32}", rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}", rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}", rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}", rf"(?:(?:{_H16}:){{0,6}}{_H16})?::"])
FORMAT_PATTERNS["ipv6"] = "(?:" + FORMAT_PATTERNS["ipv6"] + ")"
_DUR_TIME = r"T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)"
FORMAT_PATTERNS["duration"] = (rf"P(?:(?:[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M)?(?:[0-9]+D)?)(?:{_DUR_TIME})?"
                               rf"|{_DUR_TIME}|[0-9]+W)")
FORMAT_PATTERNS["json-pointer"] = r"(?:/(?:[^~/]|~[01])*)*"
# the formats JSON Schema (2020-12) defines: one of these we lack is refused; any other name is an
# annotation (OpenAPI's int32/int64/double/byte/password, vendor names), ignored as the spec says
STANDARD_FORMATS = frozenset({
    "date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6",
    "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template", "json-pointer",
    "relative-json-pointer", "regex",
})


MAX_PATTERN_STATES = 20_000  # NFA states one pattern may build (repeats counted), checked before building
_ANY = ("set", [(0, 0xD7FF), (0xE000, 0x10FFFF)])
_ANY_STAR = ("rep", _ANY, 0, None)


def regex_body(nfa: Nfa, body: int, pattern: str, anchored: bool, seg: tuple[int, int] | None,
               path: str, keyword: str, tick: Callable[[], None]) -> list[int]:
    """Edges from ``body`` for string content matching ``pattern``; returns the accepting NFA states.

    ``anchored`` False applies JSON Schema search semantics (``^``/``$`` anchor a top-level branch);
    ``keyword`` names the refusal; ``tick`` is called once per syntax node built (the compiler's deadline).
    """
    try:
        tree = parse_regex(pattern)
        branches = tree[1] if tree[0] == "alt" else [tree]
        alts = []
        for branch in branches:
            items = list(branch[1]) if branch[0] == "cat" else [branch]
            head = bool(items) and items[0] == ("bol",)
            tail = bool(items) and items[-1] == ("eol",) and len(items) > int(head)
            items = items[int(head): len(items) - int(tail)]
            if anchored and (head or tail):
                raise RegexUnsupported("anchors in a format")
            if not anchored:
                items = ([] if head else [_ANY_STAR]) + items + ([] if tail else [_ANY_STAR])
            alts.append(("cat", items))
        tree = alts[0] if len(alts) == 1 else ("alt", alts)
        if _has_anchor(tree):
            raise RegexUnsupported("an anchor that does not start or end a top-level branch")
    except RegexUnsupported as exc:
        raise UnsupportedSchemaError(keyword, path, f"regex {pattern!r}: {exc}") from exc
    need = estimate_states(tree, MAX_PATTERN_STATES)
    if need > MAX_PATTERN_STATES:
        raise UnsupportedSchemaError(keyword, path, f"regex {pattern!r} needs more than {MAX_PATTERN_STATES} "
                                                    "automaton states (repeats are expanded)")
    builder = _Builder(nfa, seg, tick)
    start = nfa.state(seg)
    nfa.epsilon(body, start)
    return [builder.build(tree, start)]


def _has_anchor(node: tuple) -> bool:
    if node[0] in ("bol", "eol"):
        return True
    if node[0] in ("cat", "alt"):
        return any(_has_anchor(c) for c in node[1])
    return node[0] == "rep" and _has_anchor(node[1])


class _Builder:
    """Thompson construction of a regex syntax tree into the shared NFA, in canonical JSON-string bytes."""

    def __init__(self, nfa: Nfa, seg: tuple[int, int] | None, tick: Callable[[], None]) -> None:
        self.nfa, self.seg, self.tick = nfa, seg, tick
        self.inc = INC if seg else 0

    def build(self, node: tuple, a: int) -> int:
        self.tick()
        nfa, kind = self.nfa, node[0]
        if kind == "set":
            b = nfa.state(self.seg)
            self.char_edges(a, b, node[1])
            return b
        if kind == "cat":
            for child in node[1]:
                a = self.build(child, a)
            return a
        if kind == "alt":
            e = nfa.state(self.seg)
            for child in node[1]:
                s = nfa.state(self.seg)
                nfa.epsilon(a, s)
                nfa.epsilon(self.build(child, s), e)
            return e
        _, child, lo, hi = node
        for _ in range(lo):
            a = self.build(child, a)
        if hi is None:
            loop = nfa.state(self.seg)
            nfa.epsilon(a, loop)
            nfa.epsilon(self.build(child, loop), loop)
            return loop
        e = nfa.state(self.seg)
        nfa.epsilon(a, e)
        for _ in range(hi - lo):
            a = self.build(child, a)
            nfa.epsilon(a, e)
        return e

    def char_edges(self, src: int, dst: int, ranges: list[tuple[int, int]]) -> None:
        """Edges ``src`` -> ``dst`` for each character in ``ranges``, as canonical JSON-string bytes. A class
        wider than a few ASCII characters is stamped from a per-process copy (:func:`_char_template`): a
        repeat such as ``.{0,255}`` builds the same class hundreds of times, ~14 us each from scratch."""
        if len(ranges) == 1 and ranges[0][1] < 0x80 and ranges[0][1] - ranges[0][0] < 4:
            _char_edges(self.nfa, src, dst, ranges, self.seg, self.inc)
            return
        k, flat = _char_template(tuple((lo, hi) for lo, hi in ranges), self.seg is not None)
        nfa = self.nfa
        base = nfa.states(k, self.seg)
        lut = [src, dst, *range(base, base + k)]  # template state 0 = src, 1 = dst, 2.. = its new states
        chunk = flat[:]
        chunk[0::5] = [lut[x] for x in flat[0::5]]
        chunk[3::5] = [lut[x] for x in flat[3::5]]
        nfa.edges += chunk


_CHAR_TEMPLATES: dict[tuple, tuple[int, list[int]]] = {}  # (ranges, counted) -> (new states, flat edges)


def _char_template(ranges: tuple[tuple[int, int], ...], counted: bool) -> tuple[int, list[int]]:
    """What :func:`_char_edges` builds for ``ranges`` from state 0 to state 1 in a scratch NFA: the number of
    states it adds (2, 3, ... there) and its edges, flat. Every added state is in the string's segment and the
    flags depend only on whether there is one (``counted``), so the copy is exact for any segment. Read-only."""
    key = (ranges, counted)
    hit = _CHAR_TEMPLATES.get(key)
    if hit is None:
        scratch = Nfa(1 << 30)
        scratch.state()
        scratch.state()
        _char_edges(scratch, 0, 1, list(ranges), (0, 1) if counted else None, INC if counted else 0)
        if scratch.eps or scratch.calls or len(set(scratch.seg_ids[2:])) > 1:
            raise AssertionError("a character class template holds more than edges from one segment")
        if len(_CHAR_TEMPLATES) >= 4096:
            _CHAR_TEMPLATES.clear()
        hit = _CHAR_TEMPLATES[key] = (scratch.num_states - 2, scratch.edges)
    return hit


def _char_edges(nfa: Nfa, src: int, dst: int, ranges: list[tuple[int, int]], seg: tuple[int, int] | None,
                inc: int) -> None:
    """Edges ``src`` -> ``dst`` for each character in ``ranges`` (see ``_Builder.char_edges``), built directly."""
    singles: list[int] = []
    escapes: list[bytes] = []
    wide: list[tuple[int, int]] = []
    for lo, hi in ranges:
        for cp in range(lo, min(hi, 0x7F) + 1):
            enc = ASCII_CANONICAL[cp]
            (singles if len(enc) == 1 else escapes).append(enc[0] if len(enc) == 1 else enc)
        if hi >= 0x80:
            wide.append((max(lo, 0x80), hi))
    for lo, hi in byte_ranges(sorted(singles)):
        nfa.edge(src, lo, hi, dst, inc)
    prefix_states: dict[bytes, int] = {}
    for enc in escapes:
        cur = src
        for i in range(len(enc) - 1):
            key = enc[: i + 1]
            if key not in prefix_states:
                prefix_states[key] = nfa.state(seg)
                nfa.edge(cur, enc[i], enc[i], prefix_states[key], ROOM if seg and i == 0 else 0)
            cur = prefix_states[key]
        nfa.edge(cur, enc[-1], enc[-1], dst, inc)
    if wide == [(0x80, 0xD7FF), (0xE000, 0x10FFFF)]:
        multibyte_char_edges(nfa, src, dst, seg, inc)
        return
    for lo, hi in wide:
        for seq in utf8_sequences(lo, hi):
            cur = src
            for i, (blo, bhi) in enumerate(seq):
                last = i == len(seq) - 1
                nxt = dst if last else nfa.state(seg)
                nfa.edge(cur, blo, bhi, nxt, inc if last else (ROOM if seg and i == 0 else 0))
                cur = nxt


def utf8_sequences(lo: int, hi: int) -> list[list[tuple[int, int]]]:
    """The UTF-8 encodings of code points ``lo..hi`` (no surrogates inside) as byte-range sequences."""
    out: list[list[tuple[int, int]]] = []
    for a, b in ((0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF)):
        if lo <= b and hi >= a:
            _split(max(lo, a), min(hi, b), out)
    return out


def _split(lo: int, hi: int, out: list[list[tuple[int, int]]]) -> None:
    n = len(chr(lo).encode("utf-8"))
    for i in range(1, n):
        m = (1 << (6 * i)) - 1
        if lo & ~m != hi & ~m:
            if lo & m:
                _split(lo, lo | m, out)
                _split((lo | m) + 1, hi, out)
                return
            if hi & m != m:
                _split(lo, (hi & ~m) - 1, out)
                _split(hi & ~m, hi, out)
                return
    out.append(list(zip(chr(lo).encode("utf-8"), chr(hi).encode("utf-8"), strict=True)))
