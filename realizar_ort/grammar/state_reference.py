"""Reference states for the mask walk: a state that takes almost every first byte the way a cheaper one does.

A property key that may be any name but the listed ones (an object that allows additional properties) is a
byte trie of the listed names that drops into a free string loop wherever it leaves the trie
(:func:`.strings.property_key_frag`). A trie node is no string loop, so its mask used to be a walk of the whole
128k-token trie (3-7 ms). But after any first byte that leaves the trie, the node is where the free string
would be after that byte (an equivalent state: the determinisation does not minimise, so the UTF-8 and escape
continuations of each node are copies of the free string's). So the node's mask is the free string's mask
(cheap: suffix tries plus a precomputed row, and cached) except for the tokens whose first byte follows the
trie or closes the key on a listed name; only those subtrees are walked
(:func:`realizar_ort.kernels.token_mask.fill_next_token_bitmask_from_reference`).

:func:`reference_state` finds, for one state ``q``, such a state ``r`` (the target most of ``q``'s bytes lead
to, if it is a string loop or class loop) and the first bytes after which ``q`` and ``r`` may differ. "The
same after byte ``b``" is proven by a bounded bisimulation search on the automaton's step semantics
(:mod:`realizar_ort.kernels.state_equivalence`: targets, counter flags and the bounds they
read, final, call and return): exact, and when the search runs past its budget the byte is simply walked.
Costs ~10-50 us per state, once per grammar, on the state's first mask miss.
"""

from __future__ import annotations

import numpy as np

from ..kernels.state_equivalence import agreeing_first_bytes
from .automaton import Automaton

__all__ = ["EQUIVALENCE_PAIRS", "PROOF_SHARE", "reference_state"]

EQUIVALENCE_PAIRS = 8  # state pairs one bisimulation search may meet before it gives up (then: walk); a UTF-8
# or \\u00XX continuation needs at most 6, a genuinely different state (a trie child) fails at the budget
PROOF_SHARE = 40  # a target pair is only searched when its first bytes start 1/40 of the tokens or more (the
# UTF-8 lead bytes; not a trie child's letter, whose search fails and whose tokens are walked anyway)


def reference_state(a: Automaton, q: int, cheap: list, tokens_by_first_byte: np.ndarray) -> tuple[int, np.ndarray] | None:
    """``(r, walk_bytes)`` such that for every first byte not in ``walk_bytes`` (uint8, sorted) a token is
    accepted from ``q`` exactly when it is from ``r`` in the same configuration; None when there is no
    such ``r``, or the tokens to walk are not fewer than half the vocabulary, or ``q``'s own walk is small (its
    first bytes start fewer than an eighth of the tokens). ``r`` is the state most of ``q``'s bytes lead to,
    either ``cheap`` (a string or class loop) or a state most of whose bytes loop back to it (the search state
    of an unanchored pattern, ``[^r]*`` before ``rocket``: its own mask is one walk, cached, and each state of
    the match so far copies it).

    ``tokens_by_first_byte``: how many tokens start with each byte."""
    live = a.trans[q] >= 0
    total = int(tokens_by_first_byte.sum())
    if 8 * int(tokens_by_first_byte[live].sum()) < total:
        return None  # a small walk anyway
    r = _dominant_target(a, q, live)
    if r == q:
        return None
    if not cheap[r] and _dominant_target(a, r, a.trans[r] >= 0) != r:
        return None  # r must be cheap, or a loop whose own mask is a plain walk (no chain of references)
    agree = np.empty(256, dtype=np.bool_)
    agreeing_first_bytes(a.trans, a.flags, a.final, a.call_start, a.call_ret, a.cmin, a.cmax, q, r,
                         EQUIVALENCE_PAIRS, tokens_by_first_byte, total // PROOF_SHARE, agree)
    walk = np.flatnonzero(~agree)
    if 2 * int(tokens_by_first_byte[walk].sum()) >= total:
        return None
    return r, walk.astype(np.uint8)


def _dominant_target(a: Automaton, q: int, live: np.ndarray) -> int:
    """The state most of ``q``'s bytes lead to (``q`` itself for a state without bytes)."""
    if not live.any():
        return q
    targets, counts = np.unique(a.trans[q][live], return_counts=True)
    return int(targets[counts.argmax()])
