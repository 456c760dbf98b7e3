"""Reading tool calls out of model text: `CallScanner` (incremental) and `parse_tool_calls` (fail-soft).

`CallScanner` reads call bodies incrementally: a JSON object with a name key and an arguments key (or
several, in a JSON array, for parallel calls). It reports each call's name once that string is
complete and the arguments value's source text in fragments whose concatenation is exactly that text
(whitespace at the top level of a body is held back until it is known to be inside the value).
`parse_tool_calls` runs it over a finished reply: call-looking text that is not a well-formed call
stays content, never an exception. Linear in the text; one scanner per reply, not thread-safe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallEvent", "CallScanner", "ParsedCall", "parse_tool_calls"]


_WS = " \t\n\r"


@dataclass(frozen=True)
class CallEvent:
    """``index``: which call of the reply. ``name`` is set once, on the call's first event.
    ``arguments``: the next fragment of the arguments' source text (may be empty)."""

    index: int
    name: str | None = None
    arguments: str = ""


@dataclass
class ParsedCall:
    name: str | None = None
    arguments_text: str = ""
    complete: bool = False


@dataclass
class _Body:
    start: int  # index of "{" in the scanner's text
    depth: int = 0
    in_string: bool = False
    escape: bool = False
    expect: str = "key"  # at depth 1: key | key_string | colon | value | value_open
    key_start: int = -1
    key: str | None = None
    value_start: int = -1
    value_key: str | None = None
    significant_end: int = -1  # end of the last char of the current depth-1 value (exclusive)
    name: str | None = None
    args_start: int = -1
    args_end: int = -1  # set when the arguments value is complete
    emitted: int = -1  # how far the arguments were reported
    announced: bool = False
    complete: bool = False
    keys: list[str] = field(default_factory=list)


class CallScanner:
    """Feed call text with `feed`; collect `CallEvent`s (see the module docstring). Linear in the text;
    one scanner per reply, not thread-safe."""

    def __init__(self, name_key: str = "name", arguments_keys: tuple[str, ...] = ("arguments", "parameters")) -> None:
        self.name_key = name_key
        self.arguments_keys = arguments_keys
        self.text = ""
        self._pos = 0
        self.calls: list[_Body] = []
        self._current: _Body | None = None
        self.junk = False  # text outside any object that is not whitespace
        self.broken = False  # a body that is not well-formed JSON (only possible without a grammar)

    # ---- scanning ----------------------------------------------------------------------------------
    def feed(self, chunk: str) -> list[CallEvent]:
        self.text += chunk
        events: list[CallEvent] = []
        while self._pos < len(self.text):
            self._step(self._pos, self.text[self._pos])
            self._pos += 1
        for index, body in enumerate(self.calls):
            self._report(index, body, events)
        return events

    def _step(self, i: int, ch: str) -> None:
        body = self._current
        if body is None:
            if ch == "{":
                body = _Body(start=i, depth=1)
                self.calls.append(body)
                self._current = body
            elif ch not in _WS and ch not in "[,]":  # parallel calls may come as an array of bodies
                self.junk = True
            return
        if self.broken:
            return
        if body.in_string:
            if body.escape:
                body.escape = False
            elif ch == "\\":
                body.escape = True
            elif ch == '"':
                body.in_string = False
                if body.depth == 1 and body.expect == "key_string":
                    body.key = _loads(self.text[body.key_start : i + 1])
                    body.expect = "colon"
            if body.depth >= 2 or body.expect == "value_open":
                body.significant_end = i + 1
            return
        if body.depth == 1:
            self._step_top(body, i, ch)
            return
        # inside the value, depth >= 2
        if ch == '"':
            body.in_string = True
        elif ch in "{[":
            body.depth += 1
        elif ch in "}]":
            body.depth -= 1
        if ch not in _WS:
            body.significant_end = i + 1

    def _step_top(self, body: _Body, i: int, ch: str) -> None:
        """One character directly inside the body object (depth 1)."""
        if body.expect == "key":
            if ch == '"':
                body.in_string, body.expect, body.key_start = True, "key_string", i
            elif ch == "}" and not body.keys:
                self._close(body)
            elif ch not in _WS:
                self.broken = True
        elif body.expect == "colon":
            if ch == ":":
                body.expect = "value"
            elif ch not in _WS:
                self.broken = True
        elif body.expect == "value":
            if ch in _WS:
                return
            body.value_start, body.value_key, body.significant_end = i, body.key, i + 1
            if body.key in self.arguments_keys:
                body.args_start, body.emitted = i, i
            if ch == '"':
                body.in_string, body.expect = True, "value_open"
            elif ch in "{[":
                body.depth += 1
                body.expect = "value_open"
            else:
                body.expect = "value_open"
        elif body.expect == "value_open":  # a scalar (number/literal) continues, or the value ended
            if ch in ",}":
                self._end_value(body)
                if ch == "}":
                    self._close(body)
                else:
                    body.expect = "key"
            elif ch not in _WS:
                body.significant_end = i + 1

    def _end_value(self, body: _Body) -> None:
        text = self.text[body.value_start : body.significant_end]
        if body.value_key is not None:
            body.keys.append(body.value_key)
        if body.value_key == self.name_key:
            name = _loads(text)
            body.name = name if isinstance(name, str) else None
            if body.name is None:
                self.broken = True
        elif body.value_key in self.arguments_keys:
            body.args_end = body.significant_end
        body.value_key = None

    def _close(self, body: _Body) -> None:
        body.depth = 0
        body.complete = True
        self._current = None

    # ---- events --------------------------------------------------------------------------------------
    def _report(self, index: int, body: _Body, events: list[CallEvent]) -> None:
        if body.name is None:
            return
        upto = self._args_upto(body)
        fragment = self.text[body.emitted : upto] if upto > body.emitted else ""
        if not body.announced:
            body.announced = True
            events.append(CallEvent(index, body.name, fragment))
        elif fragment:
            events.append(CallEvent(index, None, fragment))
        if fragment:
            body.emitted = upto

    def _args_upto(self, body: _Body) -> int:
        """How far the arguments' text is known to extend (exclusive); -1 before they start."""
        if body.args_start < 0:
            return -1
        if body.args_end >= 0:
            return body.args_end
        if body.value_key in self.arguments_keys:
            return max(body.emitted, body.significant_end)
        return body.emitted

    # ---- results -------------------------------------------------------------------------------------
    def result(self) -> list[ParsedCall]:
        out = []
        for body in self.calls:
            end = self._args_upto(body)
            text = self.text[body.args_start : end] if end >= 0 else ""
            out.append(ParsedCall(body.name, text, body.complete and body.args_end >= 0 and body.name is not None))
        return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse_tool_calls(
    text: str, name_key: str = "name", arguments_keys: tuple[str, ...] = ("arguments", "parameters"),
    known_names: frozenset[str] | None = None,
) -> tuple[str | None, list[tuple[str, str]]]:
    """Split a finished reply into (content, [(name, arguments_json)]), fail-soft.

    The reply is calls only when it is one or more complete JSON objects, each with a string name (one
    of `known_names` when given) and an arguments object; anything else is returned whole as content.
    """
    scanner = CallScanner(name_key, arguments_keys)
    scanner.feed(text)
    calls = scanner.result()
    ok = bool(calls) and not scanner.junk and not scanner.broken and all(c.complete for c in calls)
    if ok:
        for c in calls:
            args = _loads(c.arguments_text)
            if not isinstance(args, dict) or (known_names is not None and c.name not in known_names):
                ok = False
                break
    if not ok:
        return text, []
    return None, [(c.name, c.arguments_text) for c in calls if c.name is not None]
