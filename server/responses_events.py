"""Chat chunks -> Responses API streaming events, and the ``response`` object they end with.

:class:`ResponseBuilder` reads the ``chat.completion.chunk`` dicts of one run (the chat route's own chunks,
so both APIs share one engine path) and emits OpenAI's documented event sequence:
``response.created``, ``response.in_progress``; per text answer ``response.output_item.added`` (a
``message``), ``response.content_part.added``, ``response.output_text.delta``..., then
``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``; per tool
call ``response.output_item.added`` (a ``function_call``), ``response.function_call_arguments.delta``...,
``response.function_call_arguments.done``, ``response.output_item.done``; last ``response.completed`` (or
``response.incomplete`` with ``incomplete_details.reason = "max_output_tokens"``). Every event carries a
``sequence_number``. The non-streaming response is the one ``response.completed`` carries (one code path).

A builder belongs to one request; nothing is shared. Costs: O(1) per chunk (texts are joined at the end).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from .responses_request import ResponsesRequest

__all__ = ["ResponseBuilder", "response_id"]


def response_id() -> str:
    return "resp_" + secrets.token_hex(16)


def _item_id(prefix: str) -> str:
    return f"{prefix}_" + secrets.token_hex(16)


class ResponseBuilder:
    """Builds the events and the final ``response`` of one Responses request (see the module docstring)."""

    def __init__(self, req: ResponsesRequest, model: str) -> None:
        self.req = req
        self.model = model
        self.id = response_id()
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self._seq = 0
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._texts: list[str] = []  # text of the open message
        self._logprobs: list[dict[str, Any]] | None = None
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> function_call item
        self._finish: str | None = None

    # ---- events ------------------------------------------------------------------------------------
    def start(self) -> list[dict[str, Any]]:
        snapshot = self.response("in_progress", None)
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The events for one chat chunk (a usage-only chunk gives none)."""
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices", ()):
            delta = choice.get("delta", {})
            text = delta.get("content")
            lp = (choice.get("logprobs") or {}).get("content") if choice.get("logprobs") else None
            if text or lp:
                events += self._text(text or "", lp)
            for call in delta.get("tool_calls", ()):
                events += self._call(call)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return events

    def finish(self, usage: dict[str, int] | None) -> list[dict[str, Any]]:
        """Close what is open and end with ``response.completed`` (or ``response.incomplete``)."""
        events = self._close()
        status = "incomplete" if self._finish == "length" else "completed"
        final = self.response(status, usage)
        return events + [self._event(f"response.{status}", response=final)]

    # ---- the response object -----------------------------------------------------------------------
    def response(self, status: str, usage: dict[str, int] | None) -> dict[str, Any]:
        req = self.req
        body: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens, "model": self.model,
            "output": [dict(item) for item in self.output] if status != "in_progress" else [],
            "parallel_tool_calls": req.chat.parallel_tool_calls is not False,
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
            "temperature": req.chat.temperature, "text": {"format": req.text_format},
            "tool_choice": req.tool_choice, "tools": list(req.tools), "top_p": req.chat.top_p,
            "truncation": "disabled", "usage": _usage(usage) if usage is not None else None,
            "user": None, "metadata": req.metadata or {},
        }
        if req.warnings:
            body["warnings"] = list(req.warnings)  # not in OpenAI's schema: what this server ignored
        return body

    # ---- items -------------------------------------------------------------------------------------
    def _text(self, text: str, logprobs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open is None or self._open["type"] != "message":
            events += self._close()
            item = {"id": _item_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
            events += self._add(item)
            events.append(self._event("response.content_part.added", item_id=item["id"],
                                      output_index=self._index(), content_index=0, part=_part("", None)))
        assert self._open is not None
        self._texts.append(text)
        lp = [_delta_logprob(x) for x in logprobs] if logprobs else []
        if logprobs:
            self._logprobs = (self._logprobs or []) + list(logprobs)
        if text or lp:
            events.append(self._event("response.output_text.delta", item_id=self._open["id"],
                                      output_index=self._index(), content_index=0, delta=text, logprobs=lp))
        return events

    def _call(self, fragment: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        index = fragment.get("index", 0)
        fn = fragment.get("function", {})
        if index not in self._calls:
            events += self._close()
            item = {"id": _item_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": fragment.get("id") or _item_id("call"), "name": fn.get("name") or "",
                    "arguments": ""}
            self._calls[index] = item
            events += self._add(item)
        item = self._calls[index]
        piece = fn.get("arguments") or ""
        if piece:
            item["arguments"] += piece
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=self._index(), delta=piece))
        return events

    def _add(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self._open = item
        self.output.append(item)
        return [self._event("response.output_item.added", output_index=self._index(), item=dict(item))]

    def _close(self) -> list[dict[str, Any]]:
        item = self._open
        if item is None:
            return []
        self._open = None
        index = len(self.output) - 1
        events = []
        item["status"] = "incomplete" if self._finish == "length" else "completed"
        if item["type"] == "message":
            text = "".join(self._texts)
            part = _part(text, self._logprobs)
            item["content"] = [part]
            lp = [_delta_logprob(x) for x in self._logprobs or ()]
            events.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                      content_index=0, text=text, logprobs=lp))
            events.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                      content_index=0, part=part))
            self._texts, self._logprobs = [], None
        else:
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=index, name=item["name"], arguments=item["arguments"]))
        events.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return events

    def _index(self) -> int:
        return len(self.output) - 1

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event


def _part(text: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": list(logprobs or [])}


def _delta_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    return {"token": entry["token"], "logprob": entry["logprob"],
            "top_logprobs": [{"token": t["token"], "logprob": t["logprob"]} for t in entry.get("top_logprobs", ())]}


def _usage(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }
