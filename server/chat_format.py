"""Engine deltas -> OpenAI ``chat.completion.chunk`` dicts, and chunks folded back into a ``chat.completion``.

One code path for both modes: a non-streaming response is the fold of exactly the chunks a stream would
have sent, so "folded stream == non-streaming answer" holds by construction.

Wire rules kept here (OpenAI's layout, which strict parsers and peers' test suites expect): a first chunk
with only ``{"role": "assistant", "content": ""}`` (tool-call streams too), then content and tool-call
chunks; tool-call deltas always carry ``index`` and carry ``id``,
``type`` and ``function.name`` only in each call's first delta; ``arguments`` is a JSON string (streamed
as fragments); the last choice chunk has an empty delta and the ``finish_reason``; with ``include_usage`` every chunk has
``usage: null`` and a final chunk with empty ``choices`` carries the usage.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ChunkBuilder", "ToolCallFragment", "completion_id", "fold_chunks", "logprobs_content"]


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


@dataclass(frozen=True)
class ToolCallFragment:
    """A piece of one tool call in a stream: ``id``/``name`` only in its first fragment."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


def logprobs_content(items: Any) -> list[dict[str, Any]]:
    """The engine's ``TokenLogprob`` objects as OpenAI ``logprobs.content`` entries."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top_logprobs],
        }
        for lp in items
    ]


@dataclass
class ChunkBuilder:
    """Builds the chunks of one completion; call :meth:`delta` per engine delta, then :meth:`usage_chunk`."""

    model: str
    include_usage: bool = False
    want_logprobs: bool = False
    system_fingerprint: str | None = None
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=lambda: int(time.time()))
    _role_sent: bool = False

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "system_fingerprint": self.system_fingerprint, "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def delta(self, content: str = "", tool_calls: list[ToolCallFragment] | tuple[ToolCallFragment, ...] = (),
              logprobs: Any = None, finish_reason: str | None = None) -> list[dict[str, Any]]:
        """The chunks for one engine step (none when it carries no text, call, logprob or end).

        OpenAI's layout: the first step that carries something is preceded by a chunk with only
        ``{"role": "assistant", "content": ""}``; text and call fragments follow in their own chunks; the
        end is a chunk with an empty delta and the ``finish_reason``.
        """
        lp = None
        if self.want_logprobs and logprobs:
            lp = {"content": logprobs_content(logprobs), "refusal": None}
        if not content and not tool_calls and lp is None and finish_reason is None:
            return []
        chunks = []
        if not self._role_sent:
            self._role_sent = True
            chunks.append(self._choice({"role": "assistant", "content": ""}))
        if content or tool_calls or lp is not None:
            delta: dict[str, Any] = {}
            if content or lp is not None:
                delta["content"] = content
            if tool_calls:
                delta["tool_calls"] = [_tool_delta(f) for f in tool_calls]
            chunks.append(self._choice(delta, lp))
        if finish_reason is not None:
            chunks.append(self._choice({}, finish_reason=finish_reason))
        return chunks

    def _choice(self, delta: dict[str, Any], logprobs: Any = None, finish_reason: str | None = None) -> dict[str, Any]:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}])

    def usage_chunk(self, usage: Any) -> dict[str, Any]:
        chunk = self._chunk([])
        chunk["usage"] = usage_dict(usage)
        return chunk


def usage_dict(usage: Any) -> dict[str, Any]:
    """OpenAI's usage object; ``prompt_tokens_details.cached_tokens``: prompt tokens served from the prefix cache."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": getattr(usage, "cached_tokens", 0)}}


def _tool_delta(f: ToolCallFragment) -> dict[str, Any]:
    out: dict[str, Any] = {"index": f.index}
    fn: dict[str, Any] = {}
    if f.id is not None:
        out["id"] = f.id
        out["type"] = "function"
    if f.name is not None:
        fn["name"] = f.name
    fn["arguments"] = f.arguments
    out["function"] = fn
    return out


def fold_chunks(chunks: list[dict[str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` equivalent to a complete list of chunks."""
    if not chunks:
        raise ValueError("no chunks to fold")
    content: list[str] = []
    saw_content = False
    calls: dict[int, dict[str, Any]] = {}
    logprobs: list[dict[str, Any]] | None = None
    finish_reason = None
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if delta.get("content") is not None:
                saw_content = saw_content or bool(delta["content"])
                content.append(delta["content"])
            for tc in delta.get("tool_calls", ()):
                call = calls.setdefault(tc["index"], {"id": None, "type": "function",
                                                      "function": {"name": None, "arguments": ""}})
                if "id" in tc:
                    call["id"] = tc["id"]
                if "name" in tc["function"]:
                    call["function"]["name"] = tc["function"]["name"]
                call["function"]["arguments"] += tc["function"]["arguments"]
            if choice.get("logprobs") is not None:
                logprobs = (logprobs or []) + choice["logprobs"]["content"]
            if choice.get("finish_reason") is not None:
                finish_reason = choice["finish_reason"]
    first = chunks[0]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if (saw_content or not calls) else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "id": first["id"], "object": "chat.completion", "created": first["created"], "model": first["model"],
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": [{"index": 0, "message": message,
                     "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
                     "finish_reason": finish_reason}],
        "usage": usage,
    }
