"""The chat-completions request: :class:`ChatCompletionRequest` and :func:`validate_chat_request`.

The top-level fields and the sampling knobs are checked here; ``messages`` are read by
:mod:`.chat_messages`, ``tools`` / ``tool_choice`` / ``response_format`` by :mod:`.chat_schemas`. Unknown
top-level fields are refused as OpenAI does ("Unrecognized request argument"); OpenAI's fields that we do
not act on are accepted as no-ops or refused by value (:mod:`.field_policy`). Every error is an :class:`~.errors.APIError` (400) whose ``param`` names the field. Costs:
linear in the body size. Pure functions: safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .chat_messages import read_messages
from .chat_schemas import (
    MAX_SCHEMA_BYTES,
    MAX_TOOLS,
    JsonSchemaFormat,
    read_response_format,
    read_tool_choice,
    read_tools,
)
from .errors import invalid
from .field_policy import CHAT_FIELD_POLICY, check_policy_fields
from .protocol_fields import (
    check_unknown_fields,
    read_bool,
    read_int,
    read_number,
    read_stream,
    read_string,
    short_repr,
    type_name,
)
from .template_kwargs import read_chat_template_kwargs

__all__ = ["ChatCompletionRequest", "read_stop", "validate_chat_request"]

MAX_STOP = 16
MAX_STOP_LENGTH = 1024  # characters per stop string (they are matched on every step)

# Fields honoured here; the rest of OpenAI's request (no-ops and refusals by value) is in .field_policy.
_CHAT_FIELDS = {
    "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "logprobs", "top_logprobs", "n", "stream", "stream_options",
    "logit_bias", "ignore_eos", "fast_forward", "chat_template_kwargs",
} | set(CHAT_FIELD_POLICY)


@dataclass(frozen=True)
class ChatCompletionRequest:
    model: str
    messages: tuple[dict[str, Any], ...]  # OpenAI message dicts; content normalised to str | None
    tools: tuple[dict[str, Any], ...] = ()  # {"type": "function", "function": {...}} as sent
    tool_choice: str | dict[str, Any] = "auto"  # "none" | "auto" | "required" | {"type":"function",...}
    parallel_tool_calls: bool | None = None  # None: not sent (the tool format decides)
    response_format: JsonSchemaFormat | None = None  # None = text
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: bool = False
    top_logprobs: int = 0
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says (benchmarks)
    fast_forward: bool = True  # ours: false samples every token even where a grammar forces it
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # vLLM's: extra template variables

    @property
    def uses_tools(self) -> bool:
        """Whether the turn goes through tool calling: tools were given, or the history holds tool calls or
        tool results (which only the tool prompt strategy knows how to render)."""
        return bool(self.tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in self.messages)


def validate_chat_request(data: dict[str, Any], *, max_tools: int = MAX_TOOLS,
                          max_schema_bytes: int = MAX_SCHEMA_BYTES) -> ChatCompletionRequest:
    """Check a decoded chat-completions body field by field; the first bad field raises a 400 naming it.
    ``max_tools`` / ``max_schema_bytes``: the server's caps (``[server]`` config)."""
    check_unknown_fields(data, _CHAT_FIELDS)
    model = read_string(data, "model", required=True)
    messages = read_messages(data.get("messages"))
    tools = read_tools(data.get("tools"), max_tools, max_schema_bytes)
    tool_choice = read_tool_choice(data.get("tool_choice"), tools)
    parallel = read_bool(data, "parallel_tool_calls", default=None)
    response_format = read_response_format(data.get("response_format"), max_schema_bytes)

    max_tokens = read_int(data, "max_tokens", minimum=1)
    max_completion = read_int(data, "max_completion_tokens", minimum=1)
    n = read_int(data, "n", minimum=1)
    if n is not None and n > 1:
        raise invalid("n > 1 is not supported; send one request per completion.", "n")
    logit_bias = data.get("logit_bias")
    if logit_bias is not None:
        if not isinstance(logit_bias, dict):
            raise invalid(f"logit_bias must be an object, got {type_name(logit_bias)}.", "logit_bias")
        if logit_bias:
            raise invalid("logit_bias is not supported by this server.", "logit_bias")

    logprobs = read_bool(data, "logprobs", default=False)
    top_logprobs = read_int(data, "top_logprobs", minimum=0, maximum=20)
    if top_logprobs and not logprobs:
        raise invalid("top_logprobs requires logprobs to be true.", "top_logprobs")

    stream, include_usage = read_stream(data, {"include_obfuscation"})

    check_policy_fields(data)

    return ChatCompletionRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=response_format,
        max_tokens=max_completion if max_completion is not None else max_tokens,
        temperature=read_number(data, "temperature", 0.0, 2.0, default=1.0),
        top_p=read_number(data, "top_p", 0.0, 1.0, default=1.0),
        top_k=read_int(data, "top_k", minimum=-1) or 0,
        min_p=read_number(data, "min_p", 0.0, 1.0, default=0.0),
        seed=read_int(data, "seed", minimum=-(2**63), maximum=2**64 - 1),
        stop=_stop(data.get("stop")),
        presence_penalty=read_number(data, "presence_penalty", -2.0, 2.0, default=0.0),
        frequency_penalty=read_number(data, "frequency_penalty", -2.0, 2.0, default=0.0),
        repetition_penalty=read_number(data, "repetition_penalty", 0.0, 10.0, default=1.0, exclusive_min=True),
        logprobs=logprobs,
        top_logprobs=top_logprobs or 0,
        stream=stream,
        include_usage=include_usage,
        ignore_eos=read_bool(data, "ignore_eos", default=False),
        fast_forward=read_bool(data, "fast_forward", default=True),
        chat_template_kwargs=read_chat_template_kwargs(data),
    )


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise invalid(f"stop must be a string or an array of strings, got {type_name(value)}.", "stop")
    if len(items) > MAX_STOP:
        raise invalid(f"stop has {len(items)} entries; at most {MAX_STOP} are allowed.", "stop")
    for i, s in enumerate(items):
        if not isinstance(s, str) or not s:
            raise invalid(f"stop[{i}] must be a non-empty string, got {short_repr(s)}.", "stop")
        if len(s) > MAX_STOP_LENGTH:
            raise invalid(f"stop[{i}] is {len(s)} characters long; at most {MAX_STOP_LENGTH} are allowed.", "stop")
    return tuple(items)


read_stop = _stop  # ``stop`` as every route reads it (the completions route shares it)
