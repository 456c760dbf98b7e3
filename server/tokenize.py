"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's bodies): see exactly what the model receives.

``/tokenize`` takes either ``{"model"?, "prompt", "add_special_tokens"?}`` or a chat body
``{"model"?, "messages", "tools"?, "add_generation_prompt"? (true), "chat_template_kwargs"?,
"add_special_tokens"? (true)}``. A chat body is rendered by the same path ``/v1/chat/completions``
takes (the model's chat template, through the tool strategy when tools or tool messages are present),
so ``prompt`` in the answer is byte for byte the text a completion starts from, and ``tokens`` its ids.
``model`` defaults to the served chat model (as in vLLM). ``add_special_tokens`` true: the model's BOS
is prepended when the text lacks it, as generation does; false: the text's own tokens only. Answer:
``{"prompt", "tokens", "count", "max_model_len"}`` (+ ``token_strs`` with ``return_token_strs``).
``/detokenize`` takes ``{"model"?, "tokens"}`` and answers ``{"prompt"}`` (special tokens kept).

Both are pure CPU work in a worker thread (rendering is microseconds to a millisecond, tokenizing
linear in the text); every error is a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from .chat_messages import read_messages
from .chat_request import ChatCompletionRequest
from .chat_schemas import read_tools
from .errors import invalid
from .protocol_fields import (
    check_unknown_fields,
    is_int,
    parse_json_body,
    read_bool,
    read_string,
    short_repr,
    type_name,
)
from .state import LlmService, ServerState, read_body, state_of
from .template_kwargs import read_chat_template_kwargs

__all__ = ["detokenize", "tokenize"]

_PROMPT_FIELDS = {"model", "prompt", "add_special_tokens", "return_token_strs"}
_CHAT_FIELDS = {"model", "messages", "tools", "add_generation_prompt", "chat_template_kwargs", "add_special_tokens",
                "return_token_strs"}


async def tokenize(request: Request) -> Response:
    state = state_of(request)
    data = parse_json_body(await read_body(request, state.config.server.max_body_bytes))
    llm = _llm(state, data)
    if "messages" in data and "prompt" in data:
        raise invalid("Send either prompt or messages, not both.", "prompt")
    if "messages" not in data and "prompt" not in data:
        raise invalid("Missing required parameter: 'prompt' or 'messages'.", "messages")
    check_unknown_fields(data, _CHAT_FIELDS if "messages" in data else _PROMPT_FIELDS)
    add_special = read_bool(data, "add_special_tokens", default=True)
    token_strs = read_bool(data, "return_token_strs", default=False)
    engine = llm.engine
    if "prompt" in data:
        prompt = data["prompt"]
        if not isinstance(prompt, str):
            raise invalid(f"prompt must be a string, got {type_name(prompt)}.", "prompt")
        render = None
    else:
        req = ChatCompletionRequest(model=llm.name, messages=read_messages(data.get("messages")),
                                    tools=read_tools(data.get("tools")),
                                    chat_template_kwargs=read_chat_template_kwargs(data))
        add_generation_prompt = read_bool(data, "add_generation_prompt", default=True)
        render = _renderer(engine, req, add_generation_prompt)
        prompt = ""

    def work() -> dict[str, Any]:
        text = render() if render is not None else prompt
        if add_special and text:
            ids = engine.encode_prompt(text)
        else:
            ids = engine.tokenizer.encode(text, add_special_tokens=False)
        out: dict[str, Any] = {"prompt": text, "tokens": ids, "count": len(ids), "max_model_len": llm.max_context}
        if token_strs:
            out["token_strs"] = [engine.tokenizer.token_text(t) for t in ids]
        return out

    body = await anyio.to_thread.run_sync(work)
    return Response(orjson.dumps(body), media_type="application/json")


def _llm(state: ServerState, data: dict[str, Any]) -> LlmService:
    """The chat model named by ``model``; as in vLLM, ``model`` may be left out (the served chat model)."""
    model = read_string(data, "model")
    if not model and state.llm is not None:
        return state.llm
    return state.require_llm(model)


def _renderer(engine: Any, req: ChatCompletionRequest, add_generation_prompt: bool) -> Any:
    """The prompt text exactly as ``/v1/chat/completions`` renders it for this request."""
    messages = [dict(m) for m in req.messages]
    if req.uses_tools:
        from realizar_ort.tools.generate import render_tool_prompt

        tools = [dict(t) for t in req.tools]
        return lambda: render_tool_prompt(engine, messages, tools, req.chat_template_kwargs, add_generation_prompt)
    return lambda: engine.render_chat(messages, add_generation_prompt, **req.chat_template_kwargs)


async def detokenize(request: Request) -> Response:
    state = state_of(request)
    data = parse_json_body(await read_body(request, state.config.server.max_body_bytes))
    check_unknown_fields(data, {"model", "tokens"})
    llm = _llm(state, data)
    tokens = data.get("tokens")
    if not isinstance(tokens, list):
        raise invalid(f"tokens must be an array of token ids, got {type_name(tokens)}.", "tokens")
    limit = llm.engine.vocab_size
    for i, token in enumerate(tokens):
        if not is_int(token) or not 0 <= token < limit:
            raise invalid(f"tokens[{i}] must be a token id in 0..{limit - 1}, got {short_repr(token)}.", f"tokens[{i}]")
    text = await anyio.to_thread.run_sync(lambda: llm.engine.tokenizer.decode(tokens, skip_special_tokens=False))
    return Response(orjson.dumps({"prompt": text}), media_type="application/json")
