"""The legacy text-completion request (``POST /v1/completions``): :class:`CompletionRequest` and
:func:`validate_completion_request`.

``prompt`` is a string, a list of strings, a list of token ids, or a list of token-id lists; each prompt
is one choice (``index`` = its position). ``max_tokens`` defaults to 16 as OpenAI's does. ``logprobs`` is
an integer 0..5 (OpenAI's legacy shape: ``tokens``, ``token_logprobs``, ``top_logprobs``,
``text_offset``). ``echo`` prepends the prompt to the text; prompt log-probabilities are not computed, so
``echo`` with ``logprobs`` is refused. ``n`` and ``best_of`` above 1 and ``suffix`` are refused with a
400 (one request per completion), as ``n`` is on the chat route. Unknown fields are refused as on chat.
Pure functions; costs linear in the body size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .chat_request import read_stop
from .errors import invalid
from .protocol_fields import (
    check_unknown_fields,
    is_int,
    read_bool,
    read_int,
    read_number,
    read_stream,
    read_string,
)

__all__ = ["MAX_PROMPTS", "CompletionRequest", "validate_completion_request"]

MAX_PROMPTS = 64  # prompts in one request (each holds a batch slot while it runs)
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this route
_FIELDS = {
    "model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed", "stream",
    "stream_options", "echo", "logprobs", "n", "best_of", "suffix", "presence_penalty", "frequency_penalty",
    "repetition_penalty", "logit_bias", "user", "ignore_eos",
}


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompts: tuple[str | tuple[int, ...], ...]
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: no logprobs; k: the chosen token and its k most likely alternatives
    echo: bool = False
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False


def validate_completion_request(data: dict[str, Any]) -> CompletionRequest:
    """Check a decoded completions body; the first bad field raises a 400 naming it."""
    check_unknown_fields(data, _FIELDS)
    model = read_string(data, "model", required=True)
    prompts = _prompts(data.get("prompt"))
    for key in ("n", "best_of"):
        value = read_int(data, key, minimum=1)
        if value is not None and value > 1:
            raise invalid(f"{key} > 1 is not supported; send one request per completion.", key)
    if data.get("suffix") is not None:
        raise invalid("suffix is not supported: this server's models do not fill in the middle.", "suffix")
    logit_bias = data.get("logit_bias")
    if logit_bias is not None and (not isinstance(logit_bias, dict) or logit_bias):
        raise invalid("logit_bias is not supported by this server.", "logit_bias")
    logprobs = read_int(data, "logprobs", minimum=0, maximum=5)
    echo = read_bool(data, "echo", default=False)
    if echo and logprobs is not None:
        raise invalid("echo with logprobs is not supported: this server does not compute the log-probabilities "
                      "of prompt tokens.", "echo")
    stream, include_usage = read_stream(data, set())
    read_string(data, "user")
    max_tokens = read_int(data, "max_tokens", minimum=1)
    return CompletionRequest(
        model=model,
        prompts=prompts,
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        temperature=read_number(data, "temperature", 0.0, 2.0, default=1.0),
        top_p=read_number(data, "top_p", 0.0, 1.0, default=1.0),
        top_k=read_int(data, "top_k", minimum=-1) or 0,
        min_p=read_number(data, "min_p", 0.0, 1.0, default=0.0),
        stop=read_stop(data.get("stop")),
        seed=read_int(data, "seed", minimum=-(2**63), maximum=2**64 - 1),
        presence_penalty=read_number(data, "presence_penalty", -2.0, 2.0, default=0.0),
        frequency_penalty=read_number(data, "frequency_penalty", -2.0, 2.0, default=0.0),
        repetition_penalty=read_number(data, "repetition_penalty", 0.0, 10.0, default=1.0, exclusive_min=True),
        logprobs=logprobs,
        echo=echo,
        stream=stream,
        include_usage=include_usage,
        ignore_eos=read_bool(data, "ignore_eos", default=False),
    )


def _prompts(value: Any) -> tuple[str | tuple[int, ...], ...]:
    if value is None:
        raise invalid("Missing required parameter: 'prompt'.", "prompt")
    if isinstance(value, str):
        prompts: list[Any] = [value]
    elif isinstance(value, list) and value and all(is_int(t) for t in value):
        prompts = [value]  # one prompt as token ids
    elif isinstance(value, list) and value:
        prompts = value
    else:
        raise invalid("prompt must be a string, an array of strings, an array of token ids or an array of "
                      "token-id arrays, and not empty.", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise invalid(f"prompt holds {len(prompts)} prompts; at most {MAX_PROMPTS} are allowed per request.",
                      "prompt")
    out: list[str | tuple[int, ...]] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p:
                raise invalid(f"prompt[{i}] is empty.", "prompt")
            out.append(p)
        elif isinstance(p, list) and p and all(is_int(t) for t in p):
            out.append(tuple(p))
        else:
            raise invalid(f"prompt[{i}] must be a non-empty string or a non-empty array of token ids.", "prompt")
    return tuple(out)
