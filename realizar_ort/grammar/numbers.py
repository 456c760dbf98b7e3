"""Numbers and integers: ``minimum``/``maximum``/``exclusive*`` become a decimal automaton.

Integers accept canonical decimals (no leading zeros, no ``-0``) in exactly ``[lo, hi]``: a digit-by-digit
range construction whose size grows with the number of digits of the bounds, not with their value.
Non-integer numbers accept the JSON number grammar; their only enforceable bound is ``minimum: 0`` (no
sign), any other bound is refused, as is ``multipleOf``, with :class:`UnsupportedSchemaError` naming it.

Cost: build time only (pure Python), proportional to the number of digits of the bounds. Not thread-safe
on a shared :class:`~.schema_automaton.Nfa`.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .automaton import Nfa
from .errors import UnsupportedSchemaError

__all__ = ["integer_except", "number_frag"]


def integer_except(nfa: Nfa, banned: list[int]) -> tuple[int, int]:
    """Any canonical integer (no leading zeros, no ``-0``) except the ``banned`` ones: a trie of their texts
    whose nodes leave into the generic integer states wherever a byte leaves the trie."""
    texts = {str(v) for v in banned}
    prefixes = {x[:i] for x in texts for i in range(len(x) + 1)}
    s, e = nfa.state(), nfa.state()
    neg, zero, more = nfa.state(), nfa.state(), nfa.state()  # after '-'; after '0'; in the digits of n != 0
    nfa.edge(neg, 0x31, 0x39, more)
    nfa.edge(more, 0x30, 0x39, more)
    nfa.epsilon(zero, e)
    nfa.epsilon(more, e)
    node = {p: (s if p == "" else nfa.state()) for p in prefixes}
    for p, st in node.items():
        if p not in texts and p not in ("", "-"):
            nfa.epsilon(st, e)  # a complete integer that is not banned
        if p == "":
            nexts = "-0123456789"
        elif p == "-":
            nexts = "123456789"
        elif p in ("0", "-0"):
            nexts = ""
        else:
            nexts = "0123456789"
        for ch in nexts:
            q = p + ch
            target = node.get(q)
            if target is None:
                target = neg if q == "-" else zero if q == "0" else more
            nfa.edge(st, ord(ch), ord(ch), target)
    return s, e


def number_frag(nfa: Nfa, schema: dict, path: str, t: str) -> tuple[int, int] | None:
    """Start/end NFA states for a ``number`` or ``integer`` (``t``) schema; None when the range is empty."""
    if "multipleOf" in schema and not (t == "integer" and schema["multipleOf"] == 1):
        raise UnsupportedSchemaError("multipleOf", path)
    lo, hi, lo_key, hi_key = _bounds(schema, path)
    s, e = nfa.state(), nfa.state()
    digit19, digit = (0x31, 0x39), (0x30, 0x39)
    if t == "integer":
        lo_i = None if lo is None else math.ceil(lo[0]) + (1 if lo[1] and lo[0] == math.ceil(lo[0]) else 0)
        hi_i = None if hi is None else math.floor(hi[0]) - (1 if hi[1] and hi[0] == math.floor(hi[0]) else 0)
        if lo_i is not None and hi_i is not None and lo_i > hi_i:
            return None
        _integer_range(nfa, s, e, lo_i, hi_i)
        return s, e
    if hi is not None or (lo is not None and not (lo[0] == 0 and not lo[1])):
        return _bounded_decimal(nfa, s, e, lo, hi, lo_key, hi_key, path)
    start = s
    if lo is None:
        start = nfa.state()
        nfa.epsilon(s, start)
        nfa.edge(s, 0x2D, 0x2D, start)
    int_end = nfa.state()
    nfa.edge(start, 0x30, 0x30, int_end)
    more = nfa.state()
    nfa.edge(start, *digit19, more)
    nfa.edge(more, *digit, more)
    nfa.epsilon(more, int_end)
    frac0, frac = nfa.state(), nfa.state()
    nfa.edge(int_end, 0x2E, 0x2E, frac0)
    nfa.edge(frac0, *digit, frac)
    nfa.edge(frac, *digit, frac)
    exp_at = nfa.state()
    nfa.epsilon(int_end, exp_at)
    nfa.epsilon(frac, exp_at)
    nfa.epsilon(exp_at, e)
    exp0, exp_sign, exp_d = nfa.state(), nfa.state(), nfa.state()
    nfa.edge(exp_at, 0x45, 0x45, exp0)
    nfa.edge(exp_at, 0x65, 0x65, exp0)
    nfa.edge(exp0, 0x2B, 0x2B, exp_sign)
    nfa.edge(exp0, 0x2D, 0x2D, exp_sign)
    nfa.epsilon(exp0, exp_sign)
    nfa.edge(exp_sign, *digit, exp_d)
    nfa.edge(exp_d, *digit, exp_d)
    nfa.epsilon(exp_d, e)
    return s, e


def _bounded_decimal(nfa: Nfa, s: int, e: int, lo, hi, lo_key: str, hi_key: str, path: str) -> tuple[int, int] | None:
    """Numbers between integer bounds, written without an exponent (a sound restriction of the JSON
    number grammar): ``n`` or ``n.digits``, compared exactly. A lower bound must be >= 0 (or absent with an
    upper bound >= 0); a non-integer bound is refused."""
    for bound, key in ((lo, lo_key), (hi, hi_key)):
        if bound is not None and bound[0].denominator != 1:
            raise UnsupportedSchemaError(key, path, "bounds on non-integer numbers must be integers")
    if lo is not None and lo[0] < 0 or lo is None and hi[0] < 0:
        raise UnsupportedSchemaError(lo_key or hi_key, path, "negative bounds on non-integer numbers are not enforced")
    lo_n = None if lo is None else int(lo[0])
    hi_n = None if hi is None else int(hi[0])
    lo_x, hi_x = bool(lo and lo[1]), bool(hi and hi[1])
    if lo_n is not None and hi_n is not None and (lo_n > hi_n or lo_n == hi_n and (lo_x or hi_x)):
        return None
    digit = (0x30, 0x39)

    def frac_any(a: int) -> None:  # optional "." digits+ then the end
        nfa.epsilon(a, e)
        d0, d = nfa.state(), nfa.state()
        nfa.edge(a, 0x2E, 0x2E, d0)
        nfa.edge(d0, *digit, d)
        nfa.edge(d, *digit, d)
        nfa.epsilon(d, e)

    # n in [first, last] with any fraction: first..last <= x < last + 1 <= hi
    first = 0 if lo_n is None else lo_n + (1 if lo_x else 0)
    last = None if hi_n is None else hi_n - 1
    if last is None or first <= last:
        a = nfa.state()
        _natural_range(nfa, s, a, first, last)
        frac_any(a)
    if hi_n is not None and not hi_x and (lo_n is None or hi_n > lo_n or not lo_x):  # exactly hi, ".000" allowed
        a = nfa.state()
        _natural_range(nfa, s, a, hi_n, hi_n)
        nfa.epsilon(a, e)
        z0, z = nfa.state(), nfa.state()
        nfa.edge(a, 0x2E, 0x2E, z0)
        nfa.edge(z0, 0x30, 0x30, z)
        nfa.edge(z, 0x30, 0x30, z)
        nfa.epsilon(z, e)
    if lo_x and (hi_n is None or lo_n < hi_n):  # lo itself plus a fraction with a non-zero digit
        a, f, nz = nfa.state(), nfa.state(), nfa.state()
        _natural_range(nfa, s, a, lo_n, lo_n)
        nfa.edge(a, 0x2E, 0x2E, f)
        nfa.edge(f, 0x30, 0x30, f)
        nfa.edge(f, 0x31, 0x39, nz)
        nfa.edge(nz, *digit, nz)
        nfa.epsilon(nz, e)
    if lo_n is None:  # every negative number (hi >= 0): "-" then a non-zero value
        neg, a = nfa.state(), nfa.state()
        nfa.edge(s, 0x2D, 0x2D, neg)
        _natural_range(nfa, neg, a, 1, None)
        frac_any(a)
        z, f, nz = nfa.state(), nfa.state(), nfa.state()
        nfa.edge(neg, 0x30, 0x30, z)
        nfa.edge(z, 0x2E, 0x2E, f)
        nfa.edge(f, 0x30, 0x30, f)
        nfa.edge(f, 0x31, 0x39, nz)
        nfa.edge(nz, *digit, nz)
        nfa.epsilon(nz, e)
    return s, e


def _integer_range(nfa: Nfa, s: int, e: int, lo: int | None, hi: int | None) -> None:
    """Canonical decimal integers in [lo, hi] (None = unbounded)."""
    # non-negative part [max(lo, 0), hi]
    if hi is None or hi >= 0:
        _natural_range(nfa, s, e, max(lo, 0) if lo is not None else 0, hi)
    # negative part: -n for n in [max(1, -hi), -lo]
    if lo is None or lo < 0:
        neg_lo = 1 if hi is None or hi >= 0 else -hi
        neg_hi = None if lo is None else -lo
        if neg_hi is None or neg_lo <= neg_hi:
            m = nfa.state()
            nfa.edge(s, 0x2D, 0x2D, m)
            _natural_range(nfa, m, e, neg_lo, neg_hi)


def _natural_range(nfa: Nfa, s: int, e: int, lo: int, hi: int | None) -> None:
    """Canonical decimal naturals in [lo, hi] (``lo >= 0``; hi None = unbounded): one branch per length."""
    if lo == 0:
        nfa.edge(s, 0x30, 0x30, e)
        if hi == 0:
            return
        lo = 1
    top_len = len(str(hi)) if hi is not None else len(str(lo))
    for length in range(len(str(lo)), top_len + 1):
        a = max(lo, 10 ** (length - 1))
        b = min(hi, 10 ** length - 1) if hi is not None else 10 ** length - 1
        if a <= b:
            _same_length_range(nfa, s, e, str(a), str(b))
    if hi is None:  # every longer number
        cur = nfa.state()
        nfa.edge(s, 0x31, 0x39, cur)
        for _ in range(top_len - 1):
            nxt = nfa.state()
            nfa.edge(cur, 0x30, 0x39, nxt)
            cur = nxt
        tail = nfa.state()
        nfa.edge(cur, 0x30, 0x39, tail)
        nfa.edge(tail, 0x30, 0x39, tail)
        nfa.epsilon(tail, e)


def _same_length_range(nfa: Nfa, s: int, e: int, a: str, b: str) -> None:
    """Digit strings between ``a`` and ``b`` (same length, ``a <= b``), split on the first differing digit."""
    if not a:
        nfa.epsilon(s, e)
        return
    if a == "0" * len(a) and b == "9" * len(b):  # every digit string of this length: a chain, not a tree
        cur = s
        for i in range(len(a)):
            nxt = e if i == len(a) - 1 else nfa.state()
            nfa.edge(cur, 0x30, 0x39, nxt)
            cur = nxt
        return
    if a[0] == b[0]:
        m = nfa.state()
        nfa.edge(s, ord(a[0]), ord(a[0]), m)
        _same_length_range(nfa, m, e, a[1:], b[1:])
        return
    rest = len(a) - 1
    m = nfa.state()
    nfa.edge(s, ord(a[0]), ord(a[0]), m)
    _same_length_range(nfa, m, e, a[1:], "9" * rest)
    if ord(a[0]) + 1 <= ord(b[0]) - 1:
        cur = nfa.state() if rest else e
        nfa.edge(s, ord(a[0]) + 1, ord(b[0]) - 1, cur)
        for i in range(rest):
            nxt = e if i == rest - 1 else nfa.state()
            nfa.edge(cur, 0x30, 0x39, nxt)
            cur = nxt
    m2 = nfa.state()
    nfa.edge(s, ord(b[0]), ord(b[0]), m2)
    _same_length_range(nfa, m2, e, "0" * rest, b[1:])


def _bounds(schema: dict, path: str):
    """(lower, upper, lower keyword, upper keyword); a bound is ``(value, exclusive)``, the tighter wins."""
    lo = hi = None
    lo_key = hi_key = ""
    if "minimum" in schema:
        lo, lo_key = (_exact(schema["minimum"]), schema.get("exclusiveMinimum") is True), "minimum"
    if "maximum" in schema:
        hi, hi_key = (_exact(schema["maximum"]), schema.get("exclusiveMaximum") is True), "maximum"
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        v = schema.get(key)
        if isinstance(v, bool) or v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, float) and not math.isfinite(v):
            raise UnsupportedSchemaError(key, path, "bound must be a finite number")
        if key == "exclusiveMinimum" and (lo is None or _exact(v) >= lo[0]):
            lo, lo_key = (_exact(v), True), key
        if key == "exclusiveMaximum" and (hi is None or _exact(v) <= hi[0]):
            hi, hi_key = (_exact(v), True), key
    return lo, hi, lo_key, hi_key


def _exact(v: object) -> Fraction:
    """A bound as an exact rational (a float through ``float`` would lose integers above 2**53)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or isinstance(v, float) and not math.isfinite(v):
        raise UnsupportedSchemaError("minimum", "#", f"bound must be a finite number, got {v!r}")
    return Fraction(v)
