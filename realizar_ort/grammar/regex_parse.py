r"""ECMA-262 regular expressions (the dialect of JSON Schema's ``pattern``) -> a small syntax tree over code points.

Our own parser, so that nothing outside the compiler's budget runs: a repeat is never expanded here, only
counted. :func:`parse_regex` returns the tree and an estimate of the NFA states it will need (repeats
multiply); past ``max_states`` the pattern is refused before anything is built. Classes are explicit
code-point ranges (surrogates excluded), with ECMA meanings: ``\d`` = ``[0-9]``, ``\w`` = ``[A-Za-z0-9_]``,
``\s`` = the ECMA white space and line terminators (``\u00a0``, ``\u2028``, ``\ufeff``, ...), ``.`` = any
character but a line terminator; negation is exact over all of Unicode.

Nodes: ``("set", ranges)``, ``("cat", [nodes])``, ``("alt", [nodes])``, ``("rep", node, lo, hi|None)``,
``("bol",)``, ``("eol",)``. Refused (:class:`RegexUnsupported`, the caller names the keyword): lookaround,
backreferences, word boundaries, Unicode property escapes, inline flags.

Cost: linear in the pattern's length.
"""

from __future__ import annotations

__all__ = ["MAX_CODE_POINT", "MAX_REPEAT", "RegexUnsupported", "complement", "parse_regex"]

MAX_CODE_POINT = 0x10FFFF
MAX_REPEAT = 10_000  # a counted repeat above this is refused outright
_SURROGATES = (0xD800, 0xDFFF)

Ranges = list[tuple[int, int]]


class RegexUnsupported(ValueError):
    """Syntax we cannot (or will not, for its size) turn into an automaton."""


def _norm(ranges: Ranges) -> Ranges:
    """Sorted, merged, surrogate-free ranges."""
    out: Ranges = []
    for lo, hi in sorted(ranges):
        for a, b in ((lo, min(hi, _SURROGATES[0] - 1)), (max(lo, _SURROGATES[1] + 1), hi)):
            if a > b:
                continue
            if out and a <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
    return out


def complement(ranges: Ranges) -> Ranges:
    """Every character (no surrogates) outside ``ranges``."""
    out: Ranges = []
    nxt = 0
    for lo, hi in _norm(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CODE_POINT:
        out.append((nxt, MAX_CODE_POINT))
    return _norm(out)


_DIGIT: Ranges = [(0x30, 0x39)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE: Ranges = _norm([(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                        (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)])
_LINE_TERMINATORS: Ranges = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]
_CLASS_ESCAPES = {"d": _DIGIT, "w": _WORD, "s": _SPACE}
_CONTROL_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B, "0": 0x00}


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def take(self) -> str:
        c = self.peek()
        self.i += 1
        return c

    def fail(self, what: str) -> RegexUnsupported:
        return RegexUnsupported(f"{what} at offset {self.i}")

    # alternation := concat ('|' concat)*
    def alternation(self) -> tuple:
        branches = [self.concat()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concat())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concat(self) -> tuple:
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.repeat(self.atom()))
        return items[0] if len(items) == 1 else ("cat", items)

    def repeat(self, node: tuple) -> tuple:
        while True:
            c = self.peek()
            if c in ("*", "+", "?"):
                self.i += 1
                lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            elif c == "{" and self._counted():
                lo, hi = self._bounds()
            else:
                return node
            if node[0] in ("bol", "eol"):
                raise self.fail("a quantified anchor")
            if self.peek() == "?":  # lazy: same language
                self.i += 1
            node = ("rep", node, lo, hi)

    def _counted(self) -> bool:
        j = self.p.find("}", self.i)
        if j < 0:
            return False
        body = self.p[self.i + 1:j]
        parts = body.split(",")
        return 1 <= len(parts) <= 2 and parts[0].isdigit() and (len(parts) == 1 or parts[1] == "" or parts[1].isdigit())

    def _bounds(self) -> tuple[int, int | None]:
        j = self.p.index("}", self.i)
        parts = self.p[self.i + 1:j].split(",")
        self.i = j + 1
        lo = int(parts[0])
        hi = lo if len(parts) == 1 else (None if parts[1] == "" else int(parts[1]))
        if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
            raise self.fail(f"a repeat count above {MAX_REPEAT}")
        if hi is not None and hi < lo:
            raise self.fail("a repeat {n,m} with m < n")
        return lo, hi

    def atom(self) -> tuple:
        c = self.take()
        if c == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.p.startswith("?<", self.i) and self.p[self.i + 2:self.i + 3] not in ("=", "!"):
                self.i = self.p.index(">", self.i) + 1 if ">" in self.p[self.i:] else len(self.p)
            elif self.p.startswith("?P<", self.i):
                self.i = self.p.index(">", self.i) + 1 if ">" in self.p[self.i:] else len(self.p)
            elif self.peek() == "?":
                raise self.fail("lookaround or inline flags")
            inner = self.alternation()
            if self.take() != ")":
                raise self.fail("an unclosed group")
            return inner
        if c == ")":
            raise self.fail("an unmatched ')'")
        if c == "[":
            return ("set", self.char_class())
        if c == ".":
            return ("set", complement(_LINE_TERMINATORS))
        if c == "^":
            return ("bol",)
        if c == "$":
            return ("eol",)
        if c in ("*", "+", "?"):
            raise self.fail("a quantifier with nothing to repeat")
        if c == "\\":
            return ("set", self.escape(in_class=False))
        return ("set", [(ord(c), ord(c))])

    def escape(self, in_class: bool) -> Ranges:
        c = self.take()
        if c == "":
            raise self.fail("a trailing backslash")
        if c.lower() in _CLASS_ESCAPES:
            ranges = _CLASS_ESCAPES[c.lower()]
            return complement(ranges) if c.isupper() else list(ranges)
        if c in _CONTROL_ESCAPES and not (c == "0" and self.peek().isdigit()):
            return [(_CONTROL_ESCAPES[c],) * 2]
        if c == "b" and in_class:
            return [(0x08, 0x08)]
        if c in "bB":
            raise self.fail("a word boundary")
        if c.isdigit():
            raise self.fail("a backreference")
        if c in "xu":
            return [(self._hex_escape(c),) * 2]
        if c in "pPkc":
            raise self.fail(f"the escape \\{c}")
        return [(ord(c), ord(c))]

    def _hex_escape(self, c: str) -> int:
        if c == "u" and self.peek() == "{":
            j = self.p.find("}", self.i)
            digits = self.p[self.i + 1:j] if j > 0 else ""
            self.i = j + 1
        else:
            n = 2 if c == "x" else 4
            digits = self.p[self.i:self.i + n]
            self.i += n
            if len(digits) != n:
                raise self.fail(f"a short \\{c} escape")
        try:
            cp = int(digits, 16)
        except ValueError:
            raise self.fail(f"a bad \\{c} escape") from None
        if cp > MAX_CODE_POINT or _SURROGATES[0] <= cp <= _SURROGATES[1]:
            raise self.fail("an escape that is not a character (surrogate or above U+10FFFF)")
        return cp

    def char_class(self) -> Ranges:
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ranges: Ranges = []
        first = True
        while True:
            c = self.take()
            if c == "":
                raise self.fail("an unclosed character class")
            if c == "]" and not first:
                break
            first = False
            if c == "[" and self.peek() in (":", "=", "."):
                raise self.fail("a POSIX class")
            lo_set = self.escape(in_class=True) if c == "\\" else [(ord(c), ord(c))]
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                c2 = self.take()
                hi_set = self.escape(in_class=True) if c2 == "\\" else [(ord(c2), ord(c2))]
                if len(lo_set) == 1 and len(hi_set) == 1 and lo_set[0][0] == lo_set[0][1] and hi_set[0][0] == hi_set[0][1]:
                    if hi_set[0][0] < lo_set[0][0]:
                        raise self.fail("a class range out of order")
                    ranges.append((lo_set[0][0], hi_set[0][0]))
                    continue
                ranges += lo_set + [(0x2D, 0x2D)] + hi_set  # "\d-x": the dash is literal
                continue
            ranges += lo_set
        ranges = _norm(ranges)
        return complement(ranges) if negate else ranges


def parse_regex(pattern: str) -> tuple:
    """The syntax tree of ``pattern``; raises :class:`RegexUnsupported`."""
    if any(_SURROGATES[0] <= ord(c) <= _SURROGATES[1] for c in pattern):
        raise RegexUnsupported("a lone surrogate in the pattern")
    parser = _Parser(pattern)
    node = parser.alternation()
    if parser.i < len(pattern):
        raise parser.fail("an unmatched ')'")
    return node


def estimate_states(node: tuple, cap: int) -> int:
    """About how many NFA states building ``node`` takes (stops counting past ``cap``)."""
    kind = node[0]
    if kind == "set":
        return 1 + 3 * min(len(node[1]), 40)
    if kind in ("bol", "eol"):
        return 0
    if kind in ("cat", "alt"):
        total = 2
        for child in node[1]:
            total += estimate_states(child, cap)
            if total > cap:
                return total
        return total
    _, child, lo, hi = node
    one = estimate_states(child, cap)
    return min(one * max(lo, hi if hi is not None else lo + 1, 1) + 2, cap + 1)
