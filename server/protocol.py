"""Wire models: the OpenAI request bodies, validated by hand into frozen dataclasses.

Every check raises :class:`~.errors.APIError` (400) whose ``param`` names the offending field with its
path (``messages[2].content``, ``tools[0].function.parameters``), so a client learns exactly what to
fix. Unknown top-level fields are refused as OpenAI does ("Unrecognized request argument"), except a
few that are metadata only. Costs: linear in the body size; schemas are walked once for their depth.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .errors import invalid

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "MAX_TOOLS",
    "ChatCompletionRequest",
    "EmbeddingRequest",
    "JsonSchemaFormat",
    "parse_json_body",
    "validate_chat_request",
    "validate_embedding_request",
]

MAX_TOOLS = 128  # OpenAI's limit
MAX_STOP = 16
MAX_STOP_LENGTH = 1024  # characters per stop string (they are matched on every step)
MAX_SCHEMA_DEPTH = 32  # nesting of a JSON Schema (response_format / tool parameters)
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ROLES = ("system", "developer", "user", "assistant", "tool")

# Fields accepted and ignored because they only carry metadata for the caller.
_CHAT_METADATA_FIELDS = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
_CHAT_FIELDS = {
    "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format", "max_tokens",
    "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "logprobs", "top_logprobs", "n", "stream", "stream_options",
    "logit_bias", "ignore_eos",
} | _CHAT_METADATA_FIELDS
_EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


# ---- parsed requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonSchemaFormat:
    """``response_format``: ``json_object`` (schema None) or ``json_schema`` with its schema."""

    type: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool = False


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

    @property
    def uses_tools(self) -> bool:
        """Whether the turn goes through tool calling: tools were given, or the history holds tool calls or
        tool results (which only the tool prompt strategy knows how to render)."""
        return bool(self.tools) or any(m["role"] == "tool" or m.get("tool_calls") for m in self.messages)


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: tuple[str, ...] | None  # exactly one of texts / token_ids is set
    token_ids: tuple[tuple[int, ...], ...] | None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


# ---- body -----------------------------------------------------------------------------------------------


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Decode a request body (strict UTF-8 JSON) into an object, or raise a 400 that says why."""
    if not body:
        raise invalid("The request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid(f"The request body must be a JSON object, got {_type_name(data)}.")
    return data


# ---- chat -----------------------------------------------------------------------------------------------


def validate_chat_request(data: dict[str, Any]) -> ChatCompletionRequest:
    _check_unknown(data, _CHAT_FIELDS)
    model = _string(data, "model", required=True)
    messages = _messages(data.get("messages"))
    tools = _tools(data.get("tools"))
    tool_choice = _tool_choice(data.get("tool_choice"), tools)
    parallel = _bool(data, "parallel_tool_calls", default=None)
    response_format = _response_format(data.get("response_format"))
    if response_format is not None and tools and tool_choice != "none":
        raise invalid("response_format json_object/json_schema cannot be combined with tools; "
                      "set tool_choice to 'none' or drop one of them.", "response_format")

    max_tokens = _int(data, "max_tokens", minimum=1)
    max_completion = _int(data, "max_completion_tokens", minimum=1)
    n = _int(data, "n", minimum=1)
    if n is not None and n > 1:
        raise invalid("n > 1 is not supported; send one request per completion.", "n")
    logit_bias = data.get("logit_bias")
    if logit_bias is not None:
        if not isinstance(logit_bias, dict):
            raise invalid(f"logit_bias must be an object, got {_type_name(logit_bias)}.", "logit_bias")
        if logit_bias:
            raise invalid("logit_bias is not supported by this server.", "logit_bias")

    logprobs = _bool(data, "logprobs", default=False)
    top_logprobs = _int(data, "top_logprobs", minimum=0, maximum=20)
    if top_logprobs and not logprobs:
        raise invalid("top_logprobs requires logprobs to be true.", "top_logprobs")

    stream = _bool(data, "stream", default=False)
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise invalid("stream_options is only allowed when stream is true.", "stream_options")
        if not isinstance(options, dict):
            raise invalid(f"stream_options must be an object, got {_type_name(options)}.", "stream_options")
        _check_unknown(options, {"include_usage", "include_obfuscation"}, "stream_options")
        include_usage = _bool(options, "include_usage", default=False, prefix="stream_options")

    for key in ("user", "service_tier", "prompt_cache_key", "safety_identifier"):
        _string(data, key)
    _bool(data, "store", default=False)
    if data.get("metadata") is not None and not isinstance(data["metadata"], dict):
        raise invalid(f"metadata must be an object, got {_type_name(data['metadata'])}.", "metadata")

    return ChatCompletionRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=response_format,
        max_tokens=max_completion if max_completion is not None else max_tokens,
        temperature=_number(data, "temperature", 0.0, 2.0, default=1.0),
        top_p=_number(data, "top_p", 0.0, 1.0, default=1.0),
        top_k=_int(data, "top_k", minimum=-1) or 0,
        min_p=_number(data, "min_p", 0.0, 1.0, default=0.0),
        seed=_int(data, "seed", minimum=-(2**63), maximum=2**64 - 1),
        stop=_stop(data.get("stop")),
        presence_penalty=_number(data, "presence_penalty", -2.0, 2.0, default=0.0),
        frequency_penalty=_number(data, "frequency_penalty", -2.0, 2.0, default=0.0),
        repetition_penalty=_number(data, "repetition_penalty", 0.0, 10.0, default=1.0, exclusive_min=True),
        logprobs=logprobs,
        top_logprobs=top_logprobs or 0,
        stream=stream,
        include_usage=include_usage,
        ignore_eos=_bool(data, "ignore_eos", default=False),
    )


def _messages(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        raise invalid("Missing required parameter: 'messages'.", "messages")
    if not isinstance(value, list):
        raise invalid(f"messages must be an array, got {_type_name(value)}.", "messages")
    if not value:
        raise invalid("messages must contain at least one message.", "messages")
    return tuple(_message(m, f"messages[{i}]") for i, m in enumerate(value))


def _message(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be an object, got {_type_name(value)}.", where)
    role = value.get("role")
    if role not in _ROLES:
        raise invalid(f"{where}.role must be one of {list(_ROLES)}, got {_short(role)}.", f"{where}.role")
    allowed = {"role", "content", "name"}
    if role == "assistant":
        allowed |= {"tool_calls", "refusal"}
    if role == "tool":
        allowed |= {"tool_call_id"}
    _check_unknown(value, allowed, where)
    message: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = _content(value.get("content"), f"{where}.content")
    if "name" in value:
        name = value["name"]
        if not isinstance(name, str):
            raise invalid(f"{where}.name must be a string, got {_type_name(name)}.", f"{where}.name")
        message["name"] = name
    if role == "assistant":
        calls = value.get("tool_calls")
        if calls is not None:
            message["tool_calls"] = _past_tool_calls(calls, f"{where}.tool_calls")
        if content is None and not message.get("tool_calls"):
            raise invalid(f"{where}: an assistant message needs content or tool_calls.", f"{where}.content")
    elif content is None:
        raise invalid(f"Missing required parameter: '{where}.content'.", f"{where}.content")
    if role == "tool":
        call_id = value.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{where}.tool_call_id must be a non-empty string.", f"{where}.tool_call_id")
        message["tool_call_id"] = call_id
    message["content"] = content
    return message


def _content(value: Any, where: str) -> str | None:
    """``content`` as a string: a string, null, or an array of text parts (joined)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid(f"{where} must be a string or an array of content parts, got {_type_name(value)}.", where)
    texts = []
    for i, part in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise invalid(f"{at} must be an object, got {_type_name(part)}.", at)
        if part.get("type") != "text":
            raise invalid(f"{at}.type {_short(part.get('type'))} is not supported: this model takes text parts only.",
                          f"{at}.type")
        _check_unknown(part, {"type", "text"}, at)
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"{at}.text must be a string, got {_type_name(text)}.", f"{at}.text")
        texts.append(text)
    return "".join(texts)


def _past_tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid(f"{where} must be an array, got {_type_name(value)}.", where)
    calls = []
    for i, call in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            raise invalid(f"{at} must be an object, got {_type_name(call)}.", at)
        _check_unknown(call, {"id", "type", "function"}, at)
        if call.get("type", "function") != "function":
            raise invalid(f"{at}.type must be 'function', got {_short(call.get('type'))}.", f"{at}.type")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{at}.id must be a non-empty string.", f"{at}.id")
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise invalid(f"{at}.function must be an object, got {_type_name(fn)}.", f"{at}.function")
        _check_unknown(fn, {"name", "arguments"}, f"{at}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"{at}.function.name must be a non-empty string.", f"{at}.function.name")
        arguments = fn.get("arguments")
        if not isinstance(arguments, str):
            raise invalid(f"{at}.function.arguments must be a JSON string, got {_type_name(arguments)}.",
                          f"{at}.function.arguments")
        try:
            orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise invalid(f"{at}.function.arguments is not valid JSON.", f"{at}.function.arguments") from None
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls


def _tools(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(f"tools must be an array, got {_type_name(value)}.", "tools")
    if len(value) > MAX_TOOLS:
        raise invalid(f"tools has {len(value)} entries; at most {MAX_TOOLS} are allowed.", "tools")
    tools = []
    names: set[str] = set()
    for i, tool in enumerate(value):
        at = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(f"{at} must be an object, got {_type_name(tool)}.", at)
        _check_unknown(tool, {"type", "function"}, at)
        if tool.get("type") != "function":
            raise invalid(f"{at}.type must be 'function', got {_short(tool.get('type'))}.", f"{at}.type")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise invalid(f"{at}.function must be an object, got {_type_name(fn)}.", f"{at}.function")
        _check_unknown(fn, {"name", "description", "parameters", "strict"}, f"{at}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise invalid(f"{at}.function.name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-', "
                          f"got {_short(name)}.", f"{at}.function.name")
        if name in names:
            raise invalid(f"{at}.function.name {name!r} is defined twice.", f"{at}.function.name")
        names.add(name)
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(f"{at}.function.description must be a string.", f"{at}.function.description")
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        _schema(parameters, f"{at}.function.parameters")
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise invalid(f"{at}.function.strict must be a boolean.", f"{at}.function.strict")
        clean = {"name": name, "parameters": parameters}
        if description is not None:
            clean["description"] = description
        if strict is not None:
            clean["strict"] = strict
        tools.append({"type": "function", "function": clean})
    return tuple(tools)


def _tool_choice(value: Any, tools: tuple[dict[str, Any], ...]) -> str | dict[str, Any]:
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise invalid(f"tool_choice must be 'none', 'auto', 'required' or a named function, got {_short(value)}.",
                          "tool_choice")
        if value == "required" and not tools:
            raise invalid("tool_choice 'required' needs at least one tool in tools.", "tool_choice")
        return value
    if not isinstance(value, dict):
        raise invalid(f"tool_choice must be a string or an object, got {_type_name(value)}.", "tool_choice")
    fn = value.get("function")
    if value.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise invalid("tool_choice object must be {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                      "tool_choice")
    name = fn["name"]
    if name not in {t["function"]["name"] for t in tools}:
        raise invalid(f"tool_choice names function {name!r}, which is not in tools.", "tool_choice")
    return {"type": "function", "function": {"name": name}}


def _response_format(value: Any) -> JsonSchemaFormat | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"response_format must be an object, got {_type_name(value)}.", "response_format")
    kind = value.get("type")
    if kind == "text":
        _check_unknown(value, {"type"}, "response_format")
        return None
    if kind == "json_object":
        _check_unknown(value, {"type"}, "response_format")
        return JsonSchemaFormat("json_object")
    if kind != "json_schema":
        raise invalid(f"response_format.type must be 'text', 'json_object' or 'json_schema', got {_short(kind)}.",
                      "response_format.type")
    _check_unknown(value, {"type", "json_schema"}, "response_format")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid("response_format.json_schema must be an object with 'name' and 'schema'.",
                      "response_format.json_schema")
    _check_unknown(spec, {"name", "description", "schema", "strict"}, "response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise invalid("response_format.json_schema.name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'.",
                      "response_format.json_schema.name")
    schema = spec.get("schema", {})
    _schema(schema, "response_format.json_schema.schema")
    strict = spec.get("strict", False)
    if not isinstance(strict, bool):
        raise invalid("response_format.json_schema.strict must be a boolean.", "response_format.json_schema.strict")
    return JsonSchemaFormat("json_schema", schema=schema, name=name, strict=strict)


def _schema(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be a JSON Schema object, got {_type_name(value)}.", where)
    depth = _depth(value)
    if depth > MAX_SCHEMA_DEPTH:
        raise invalid(f"{where} is nested {depth} levels deep; at most {MAX_SCHEMA_DEPTH} are supported.", where)


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, iteratively (a hostile schema cannot exhaust the stack)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node)
    return deepest


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise invalid(f"stop must be a string or an array of strings, got {_type_name(value)}.", "stop")
    if len(items) > MAX_STOP:
        raise invalid(f"stop has {len(items)} entries; at most {MAX_STOP} are allowed.", "stop")
    for i, s in enumerate(items):
        if not isinstance(s, str) or not s:
            raise invalid(f"stop[{i}] must be a non-empty string, got {_short(s)}.", "stop")
        if len(s) > MAX_STOP_LENGTH:
            raise invalid(f"stop[{i}] is {len(s)} characters long; at most {MAX_STOP_LENGTH} are allowed.", "stop")
    return tuple(items)


# ---- embeddings -----------------------------------------------------------------------------------------


def validate_embedding_request(data: dict[str, Any]) -> EmbeddingRequest:
    _check_unknown(data, _EMBEDDING_FIELDS)
    model = _string(data, "model", required=True)
    _string(data, "user")
    fmt = data.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise invalid(f"encoding_format must be 'float' or 'base64', got {_short(fmt)}.", "encoding_format")
    dimensions = _int(data, "dimensions", minimum=1)
    texts, token_ids = _embedding_input(data.get("input"))
    return EmbeddingRequest(model, texts, token_ids, fmt, dimensions)


def _embedding_input(value: Any) -> tuple[tuple[str, ...] | None, tuple[tuple[int, ...], ...] | None]:
    if value is None:
        raise invalid("Missing required parameter: 'input'.", "input")
    if isinstance(value, str):
        return (value,), None
    if not isinstance(value, list) or not value:
        raise invalid("input must be a string, an array of strings, an array of token ids or an array of "
                      "token-id arrays, and must not be empty.", "input")
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise invalid(f"input has {len(value)} entries; at most {MAX_EMBEDDING_INPUTS} are allowed.", "input")
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid(f"input[{i}] must be a string like the other inputs, got {_type_name(item)}.",
                              f"input[{i}]")
        return tuple(value), None
    if _is_int(first):
        return None, (_token_ids(value, "input"),)
    if isinstance(first, list):
        return None, tuple(_token_ids(item, f"input[{i}]") for i, item in enumerate(value))
    raise invalid(f"input[0] must be a string, a token id or an array of token ids, got {_type_name(first)}.",
                  "input[0]")


def _token_ids(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise invalid(f"{where} must be a non-empty array of token ids.", where)
    for i, tok in enumerate(value):
        if not _is_int(tok) or tok < 0:
            raise invalid(f"{where}[{i}] must be a non-negative integer token id, got {_short(tok)}.", where)
    return tuple(value)


# ---- field readers --------------------------------------------------------------------------------------


def _check_unknown(obj: dict[str, Any], allowed: set[str], where: str = "") -> None:
    for key in obj:
        if key not in allowed:
            param = f"{where}.{key}" if where else key
            raise invalid(f"Unrecognized request argument supplied: {param}", param)


def _string(obj: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(f"Missing required parameter: '{key}'.", key)
        return ""
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string, got {_type_name(value)}.", key)
    return value


def _bool(obj: dict[str, Any], key: str, *, default: Any, prefix: str = "") -> Any:
    value = obj.get(key)
    param = f"{prefix}.{key}" if prefix else key
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{param} must be a boolean, got {_type_name(value)}.", param)
    return value


def _int(obj: dict[str, Any], key: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise invalid(f"{key} must be an integer, got {_short(value)}.", key)
    if minimum is not None and value < minimum:
        raise invalid(f"{key} must be >= {minimum}, got {value}.", key)
    if maximum is not None and value > maximum:
        raise invalid(f"{key} must be <= {maximum}, got {value}.", key)
    return value


def _number(obj: dict[str, Any], key: str, lo: float, hi: float, *, default: float,
            exclusive_min: bool = False) -> float:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"{key} must be a number, got {_short(value)}.", key)
    if value < lo or value > hi or (exclusive_min and value == lo):
        bound = f"> {lo}" if exclusive_min else f">= {lo}"
        raise invalid(f"{key} must be {bound} and <= {hi}, got {value}.", key)
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    """A value for an error message, cut short so a hostile 8 MB string is not echoed back."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

