"""Streaming text from a stream of token ids: exact UTF-8, stop strings held back until they cannot match.

`IncrementalDetokenizer` concatenates each token's exact bytes (`Tokenizer.token_bytes`) through an
incremental UTF-8 decoder, so a character split across tokens (byte-level BPE or `<0xNN>` byte-fallback
tokens) comes out whole once its last byte arrives, and the text equals `Tokenizer.decode` of all ids.
Cost: O(bytes of the new token) per token; nothing is ever re-decoded.

`StopStringMatcher` finds stop strings in the text and holds back the longest tail that could still
grow into one; held text is released as soon as it can no longer match, and a matched stop string (and
anything after it) is never released. Cost: O(new text + longest stop string) per push.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from ..tokenizer import Tokenizer

__all__ = ["IncrementalDetokenizer", "StopStringMatcher", "TextStream"]


class IncrementalDetokenizer:
    """Token ids in, complete UTF-8 text out. One per sequence; not thread-safe."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip_leading_space = tokenizer.strips_leading_space
        self._started = False
        self._skip = 0  # bytes already pushed that the next tokens spell again (see `replace_last`)

    def push(self, token_id: int) -> str:
        """The text completed by `token_id` (may be empty: partial character or skipped special token)."""
        if self._skip_special and self._tokenizer.is_special(token_id):
            return ""
        data = self._tokenizer.token_bytes(token_id)
        if self._skip:
            cut = min(self._skip, len(data))
            data, self._skip = data[cut:], self._skip - cut
        if data and not self._started:
            self._started = True
            if self._strip_leading_space and data[:1] == b" ":
                data = data[1:]
        return self._utf8.decode(data)

    def replace_last(self, token_id: int) -> None:
        """`token_id`, the last token pushed, is replaced by the next tokens, which spell its bytes again
        first (fast-forward's token healing): those bytes were pushed already and are skipped."""
        if not (self._skip_special and self._tokenizer.is_special(token_id)):
            self._skip += len(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: an incomplete trailing character becomes U+FFFD, as `decode` would give."""
        return self._utf8.decode(b"", final=True)


class StopStringMatcher:
    """Holds back text that might be the start of a stop string. One per sequence; not thread-safe."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None

    def push(self, text: str) -> str:
        """Add text; return what is now safe to emit. After a match, returns the text before the stop
        string and sets `matched`; everything after it is dropped."""
        if not self._stops:
            return text
        if self.matched is not None:
            return ""
        buffer = self._held + text
        hit_at, hit = -1, None
        for stop in self._stops:  # earliest match wins; ties go to the stop listed first
            at = buffer.find(stop)
            if at != -1 and (hit_at == -1 or at < hit_at):
                hit_at, hit = at, stop
        if hit is not None:
            self.matched, self._held = hit, ""
            return buffer[:hit_at]
        hold = self._partial_suffix(buffer)
        self._held = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """The sequence ended another way: release the held text (it never became a stop string)."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held

    def _partial_suffix(self, buffer: str) -> int:
        """Length of the longest tail of `buffer` that is a proper prefix of some stop string."""
        for k in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[-k:]
            if any(stop.startswith(tail) for stop in self._stops):
                return k
        return 0


class TextStream:
    """Detokenizer + stop-string matcher for one sequence: `push(token_id) -> text to emit`."""

    def __init__(
        self, tokenizer: Tokenizer, stops: Sequence[str] = (), skip_special_tokens: bool = True
    ) -> None:
        self._detok = IncrementalDetokenizer(tokenizer, skip_special_tokens)
        self._stops = StopStringMatcher(stops)

    @property
    def matched_stop(self) -> str | None:
        return self._stops.matched

    def push(self, token_id: int) -> str:
        return self._stops.push(self._detok.push(token_id))

    def replace_last(self, token_id: int) -> None:
        """See `IncrementalDetokenizer.replace_last`: the text does not change, only the tokens."""
        self._detok.replace_last(token_id)

    def finish(self) -> str:
        """Flush at the end of the sequence (eos or length); returns the last safe text."""
        return self._stops.push(self._detok.flush()) + self._stops.flush()
