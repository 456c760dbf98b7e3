"""What the server does with each field of OpenAI's chat-completions request that it does not act on.

OpenAI's request schema (openai/openai-openapi, ``CreateChatCompletionRequest``) has more fields than a
local text model can act on, and clients and proxies forward them with harmless values. Each such field
is in :data:`CHAT_FIELD_POLICY` with one of two answers, decided by its *value*:

- a **no-op**: the value asks for nothing we lack (``modalities: ["text"]``, a ``service_tier``, a
  ``prompt_cache_key``, ``verbosity``, ``store``, ``metadata``...), so it is type-checked and ignored;
- a **refusal**: the value asks for something this server cannot do (audio output, web search,
  moderation, reasoning effort on a model that does not reason, the deprecated ``functions``), so it is a
  400 whose ``param`` names the field and whose message says what to send instead.

``null`` always means "not sent". Fields the server honours are read by :mod:`.chat_request`; fields in
neither place are refused as OpenAI does ("Unrecognized request argument"). Pure functions; O(size of the
fields checked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import invalid
from .protocol_fields import short_repr, type_name

__all__ = ["CHAT_FIELD_POLICY", "check_policy_fields"]

Check = Callable[[Any, str], None]


def _string(value: Any, key: str) -> None:
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string, got {type_name(value)}.", key)


def _boolean(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise invalid(f"{key} must be a boolean, got {type_name(value)}.", key)


def _object(value: Any, key: str) -> None:
    if not isinstance(value, dict):
        raise invalid(f"{key} must be an object, got {type_name(value)}.", key)


def _one_of(*allowed: str) -> Check:
    def check(value: Any, key: str) -> None:
        if value not in allowed:
            raise invalid(f"{key} must be one of {list(allowed)}, got {short_repr(value)}.", key)
    return check


def _metadata(value: Any, key: str) -> None:
    _object(value, key)
    for k, v in value.items():
        if not isinstance(v, str):
            raise invalid(f"{key}.{k} must be a string, got {type_name(v)}.", f"{key}.{k}")


def _modalities(value: Any, key: str) -> None:
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        raise invalid(f"{key} must be an array of strings, got {short_repr(value)}.", key)
    others = [m for m in value if m != "text"]
    if others:
        raise invalid(f"{key} asks for {short_repr(others)} output; this server's models produce text only "
                      "(send [\"text\"] or leave it out).", key)


def _prediction(value: Any, key: str) -> None:  # a speed hint: the answer is the same without it
    _object(value, key)
    if value.get("type") != "content":
        raise invalid(f"{key}.type must be 'content', got {short_repr(value.get('type'))}.", f"{key}.type")


def _reasoning_effort(value: Any, key: str) -> None:
    if value != "none":
        raise invalid(f"{key} {short_repr(value)} is not supported: this model does not reason "
                      "(send 'none' or leave it out).", key)


def _refuse(why: str) -> Check:
    def check(value: Any, key: str) -> None:
        raise invalid(f"{key} is not supported by this server: {why}", key)
    return check


# field -> check of a non-null value (a no-op when it passes; a 400 naming the field when it does not)
CHAT_FIELD_POLICY: dict[str, Check] = {
    # metadata for the caller or for OpenAI's own bookkeeping: type-checked, ignored
    "user": _string,
    "safety_identifier": _string,
    "prompt_cache_key": _string,  # a routing hint; the prefix cache needs none
    "prompt_cache_retention": _one_of("in_memory", "24h"),
    "prompt_cache_options": _object,
    "service_tier": _one_of("auto", "default", "flex", "scale", "priority", "fast"),
    "store": _boolean,
    "metadata": _metadata,
    "verbosity": _one_of("low", "medium", "high"),  # a style hint the model is free to take or leave
    "prediction": _prediction,
    # no-op for the value that asks for nothing; refused for the others
    "modalities": _modalities,
    "reasoning_effort": _reasoning_effort,
    # things this server cannot do
    "audio": _refuse("the models produce text only."),
    "web_search_options": _refuse("it has no web search."),
    "moderation": _refuse("it runs no moderation model."),
    "functions": _refuse("`functions` is deprecated; send the same definitions as `tools`."),
    "function_call": _refuse("`function_call` is deprecated; use `tool_choice`."),
}


def check_policy_fields(data: dict[str, Any], policy: dict[str, Check] = CHAT_FIELD_POLICY) -> None:
    """Check every policy field present in ``data`` (``null`` is "not sent"); raises a 400 naming it."""
    for key, check in policy.items():
        value = data.get(key)
        if value is not None:
            check(value, key)
