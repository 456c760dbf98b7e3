"""The Responses request (``POST /v1/responses``): :class:`ResponsesRequest` and :func:`validate_responses_request`.

The body is checked field by field and mapped onto a :class:`~.chat_request.ChatCompletionRequest`, so a
Responses call runs exactly the chat path (prompt, tool grammar, JSON modes, sampling). What this server
does with each field:

- ``input`` / ``instructions``: see :mod:`.responses_input`. ``tools``: ``function`` tools run as chat
  tools; other types (``web_search``, ``file_search``, ``computer_use_preview``, ``code_interpreter``,
  ``mcp``, ...) are ignored with a warning in the response's ``warnings`` (clients such as Codex always
  send some). ``tool_choice``: ``none`` / ``auto`` / ``required``, ``{"type": "function", "name"}``, or
  ``{"type": "allowed_tools", "mode", "tools"}``; forcing a hosted tool is a 400.
- ``text.format``: ``text``, ``json_object``, ``json_schema`` (``name``, ``schema``, ``strict``) as
  chat's ``response_format``; ``text.verbosity`` is accepted and ignored.
- ``max_output_tokens``, ``temperature``, ``top_p``, ``parallel_tool_calls``, ``stream``, ``top_logprobs``
  (with ``include: ["message.output_text.logprobs"]``): as in chat.
- Stateless: nothing is stored. ``store`` is accepted and ignored; ``previous_response_id``,
  ``conversation``, ``prompt`` and ``background: true`` are refused with a 400 that says so.
- Accepted and ignored (metadata or no meaning for these models): ``metadata``, ``user``,
  ``safety_identifier``, ``prompt_cache_key``, ``prompt_cache_retention``, ``service_tier``,
  ``reasoning``, ``truncation`` (``auto`` does not drop items: an input too long is a 400), other
  ``include`` values, ``max_tool_calls``, ``stream_options``.

Unknown fields are refused as on the chat route. Pure functions; costs linear in the body size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .chat_request import ChatCompletionRequest
from .chat_schemas import JsonSchemaFormat, read_response_format, read_tool_choice, read_tools
from .errors import APIError, invalid
from .protocol_fields import (
    check_unknown_fields,
    read_bool,
    read_int,
    read_number,
    read_string,
    short_repr,
    type_name,
)
from .responses_input import read_input

__all__ = ["ResponsesRequest", "validate_responses_request"]

_IGNORED = {
    "metadata", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "service_tier",
    "reasoning", "truncation", "include", "max_tool_calls", "stream_options", "store", "background",
    "previous_response_id", "conversation", "prompt", "prompt_cache_options", "context_management",
}
_FIELDS = {
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "max_output_tokens",
    "temperature", "top_p", "stream", "top_logprobs", "seed",
} | _IGNORED
_LOGPROBS_INCLUDE = "message.output_text.logprobs"


@dataclass(frozen=True)
class ResponsesRequest:
    """A validated Responses request: the chat request it runs as, and what the response echoes."""

    chat: ChatCompletionRequest
    instructions: str | None
    tools: tuple[dict[str, Any], ...]  # the function tools, in the Responses shape (echoed back)
    tool_choice: str | dict[str, Any]  # as sent (echoed back)
    text_format: dict[str, Any]  # ``text.format`` as sent (default ``{"type": "text"}``)
    metadata: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    warnings: tuple[str, ...] = field(default=())


def validate_responses_request(data: dict[str, Any]) -> ResponsesRequest:
    """Check a decoded Responses body; the first bad field raises a 400 naming it."""
    check_unknown_fields(data, _FIELDS)
    _refuse_state(data)
    model = read_string(data, "model", required=True)
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid(f"instructions must be a string, got {type_name(instructions)}.", "instructions")
    messages = read_input(data.get("input"), instructions)
    function_tools, chat_tools, warnings = _tools(data.get("tools"))
    tool_choice, chat_tools = _tool_choice(data.get("tool_choice"), chat_tools)
    text_format, response_format = _text(data.get("text"))
    include = data.get("include")
    if include is not None and (not isinstance(include, list) or not all(isinstance(x, str) for x in include)):
        raise invalid("include must be an array of strings.", "include")
    top_logprobs = read_int(data, "top_logprobs", minimum=0, maximum=20) or 0
    logprobs = _LOGPROBS_INCLUDE in (include or ()) or top_logprobs > 0
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid(f"metadata must be an object, got {type_name(metadata)}.", "metadata")
    max_output_tokens = read_int(data, "max_output_tokens", minimum=1)
    for key in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        read_string(data, key)
    read_bool(data, "store", default=True)
    chat = ChatCompletionRequest(
        model=model,
        messages=messages,
        tools=chat_tools,
        tool_choice=tool_choice,
        parallel_tool_calls=read_bool(data, "parallel_tool_calls", default=None),
        response_format=response_format,
        max_tokens=max_output_tokens,
        temperature=read_number(data, "temperature", 0.0, 2.0, default=1.0),
        top_p=read_number(data, "top_p", 0.0, 1.0, default=1.0),
        seed=read_int(data, "seed", minimum=-(2**63), maximum=2**64 - 1),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        stream=read_bool(data, "stream", default=False),
        include_usage=True,
    )
    return ResponsesRequest(chat=chat, instructions=instructions, tools=function_tools,
                            tool_choice=data.get("tool_choice") or "auto", text_format=text_format,
                            metadata=metadata, max_output_tokens=max_output_tokens, warnings=tuple(warnings))


def _refuse_state(data: dict[str, Any]) -> None:
    for key, what in (("previous_response_id", "a previous response"), ("conversation", "a conversation"),
                      ("prompt", "a stored prompt")):
        if data.get(key) is not None:
            raise invalid(f"{key} is not supported: this server is stateless and stores no responses, so it "
                          f"cannot continue {what}. Send the whole conversation in input instead.", key)
    if data.get("background") is True:
        raise invalid("background is not supported: this server is stateless and stores no responses.",
                      "background")


def _tools(value: Any) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...], list[str]]:
    """(function tools as sent, the same as chat tools, warnings for the tools that were ignored)."""
    if value is None:
        return (), (), []
    if not isinstance(value, list):
        raise invalid(f"tools must be an array, got {type_name(value)}.", "tools")
    functions, chat, warnings, where = [], [], [], []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise invalid(f"tools[{i}] must be an object, got {type_name(tool)}.", f"tools[{i}]")
        kind = tool.get("type")
        if kind != "function":
            warnings.append(f"tools[{i}] of type {short_repr(kind)} is not supported by this server and was ignored.")
            continue
        check_unknown_fields(tool, {"type", "name", "description", "parameters", "strict"}, f"tools[{i}]")
        fn = {k: v for k, v in tool.items() if k != "type" and v is not None}
        functions.append(tool)
        chat.append({"type": "function", "function": fn})
        where.append(i)
    try:
        return tuple(functions), read_tools(chat), warnings
    except APIError as exc:  # name the field as the client sent it: tools[i].parameters, not .function.
        if exc.param and exc.param.startswith("tools["):
            j = int(exc.param[6:exc.param.index("]")])
            rest = exc.param[exc.param.index("]") + 1:].replace(".function", "", 1)
            exc.param = f"tools[{where[j]}]{rest}"
            exc.message = exc.message.replace(f"tools[{j}].function", exc.param.split(".")[0], 1)
        raise


def _tool_choice(value: Any, tools: tuple[dict[str, Any], ...]) -> tuple[str | dict[str, Any],
                                                                          tuple[dict[str, Any], ...]]:
    """Chat's tool_choice (and the tools it may pick from) for a Responses ``tool_choice``."""
    if value is None or isinstance(value, str):
        return read_tool_choice(value, tools), tools
    if not isinstance(value, dict):
        raise invalid(f"tool_choice must be a string or an object, got {type_name(value)}.", "tool_choice")
    kind = value.get("type")
    if kind == "function":
        check_unknown_fields(value, {"type", "name"}, "tool_choice")
        return read_tool_choice({"type": "function", "function": {"name": value.get("name")}}, tools), tools
    if kind == "allowed_tools":
        check_unknown_fields(value, {"type", "mode", "tools"}, "tool_choice")
        mode, allowed = value.get("mode", "auto"), value.get("tools")
        if mode not in ("auto", "required"):
            raise invalid(f"tool_choice.mode must be 'auto' or 'required', got {short_repr(mode)}.", "tool_choice.mode")
        if not isinstance(allowed, list):
            raise invalid("tool_choice.tools must be an array of {\"type\": \"function\", \"name\": ...}.",
                          "tool_choice.tools")
        names = {t.get("name") for t in allowed if isinstance(t, dict) and t.get("type") == "function"}
        kept = tuple(t for t in tools if t["function"]["name"] in names)
        return read_tool_choice(mode, kept), kept
    raise invalid(f"tool_choice of type {short_repr(kind)} is not supported: this server runs function tools "
                  "only.", "tool_choice")


def _text(value: Any) -> tuple[dict[str, Any], JsonSchemaFormat | None]:
    """(``text.format`` to echo, the chat ``response_format`` it means)."""
    if value is None:
        return {"type": "text"}, None
    if not isinstance(value, dict):
        raise invalid(f"text must be an object, got {type_name(value)}.", "text")
    check_unknown_fields(value, {"format", "verbosity"}, "text")
    fmt = value.get("format")
    if fmt is None:
        return {"type": "text"}, None
    if not isinstance(fmt, dict):
        raise invalid(f"text.format must be an object, got {type_name(fmt)}.", "text.format")
    if fmt.get("type") == "json_schema":  # Responses flattens chat's {"json_schema": {...}}
        check_unknown_fields(fmt, {"type", "name", "schema", "strict", "description"}, "text.format")
        if "schema" not in fmt:
            raise invalid("Missing required parameter: 'text.format.schema'.", "text.format.schema")
        spec = {k: v for k, v in fmt.items() if k != "type"}
        chat_format = {"type": "json_schema", "json_schema": spec}
    else:
        chat_format = fmt
    try:
        return fmt, read_response_format(chat_format)
    except APIError as exc:
        if exc.param:
            exc.param = exc.param.replace("response_format.json_schema", "text.format").replace(
                "response_format", "text.format")
            exc.message = exc.message.replace("response_format.json_schema", "text.format").replace(
                "response_format", "text.format")
        raise
