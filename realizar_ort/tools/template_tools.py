"""Tool prompts through the model's own chat template: `TemplateToolStrategy` and the probe that allows it.

A model folder's chat template (Meta's Llama 3.1/3.2 ``tokenizer_config.json`` template, or ours in
``realizar_ort/templates/llama3.jinja``) renders the whole conversation, tools included, exactly as
transformers' ``apply_chat_template(messages, tools=..., add_generation_prompt=True, **kwargs)`` does: the
same variables (``tools`` as OpenAI function dicts as the client sent them, or None; ``bos_token`` and the
other special tokens; ``strftime_now``; the request's ``chat_template_kwargs`` such as ``date_string``),
messages normalised first (text content, past calls' JSON-string arguments parsed into objects, as vLLM
does, so no template encodes them twice).

Whether a template can do this is learned once per template by `probe_template` (a few renders of a
sentinel conversation, cached): the tool's name must show in the prompt, a past call must come out as one
JSON object ``{["type": "function",] <name key>: <name>, <arguments key>: {...}}`` (optionally after
``<|python_tag|>``) whose keys tell the call format, and the tool result must show too. A template that
fails any of these (Llama 3.0's, which ignores ``tools``; one that writes calls in another syntax) leaves
the model on our own `Llama3ToolStrategy`, and `TemplateProbe.reason` says why.

Only the ``llama3`` chat format is probed: ChatML models keep `ChatMLToolStrategy` (SmolLM2's template has
no tool support; Hermes/Qwen-style templates wrap calls in ``<tool_call>`` tags, which no `CallFormat`
expresses yet).

Rendering is deterministic within a day: the only input besides the request is ``strftime_now``'s date
(Meta's template writes "Today Date" from it unless ``date_string`` is given). Thread-safe.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..chat_template import ChatTemplate
from ..errors import InvalidRequestError
from .definitions import ToolDefinition
from .prompts import CallFormat

__all__ = ["LLAMA3_TEMPLATE_STOPS", "TemplateProbe", "TemplateToolStrategy", "probe_template"]

LLAMA3_OPENING = "<|python_tag|>"
LLAMA3_TEMPLATE_STOPS = ("<|eom_id|>", "<|eot_id|>")
_ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"

# A sentinel conversation: names no real conversation holds, so finding them in the output proves the
# template rendered that part.
_FN = "realizar_probe_fn"
_ARG = "realizar_probe_arg"
_VALUE = "realizar probe value"
_RESULT = "realizar probe result"
_PROBE_TOOL = {"type": "function", "function": {
    "name": _FN, "description": "realizar probe tool",
    "parameters": {"type": "object", "properties": {_ARG: {"type": "string"}}, "required": [_ARG]}}}
_PROBE_CALL = {"id": "call_probe", "type": "function", "function": {"name": _FN, "arguments": {_ARG: _VALUE}}}
_PROBE_DATE = {"date_string": "01 Jan 2025"}


@dataclass(frozen=True)
class TemplateProbe:
    """What a chat template does with tools: `call_format` when it renders them usably, else `reason`."""

    call_format: CallFormat | None
    reason: str = ""

    @property
    def renders_tools(self) -> bool:
        return self.call_format is not None


def _probe(template: ChatTemplate) -> TemplateProbe:
    ask = {"role": "user", "content": "realizar probe question"}
    try:
        listed = template.render([ask], tools=[_PROBE_TOOL], **_PROBE_DATE)
        history = template.render(
            [ask, {"role": "assistant", "content": "", "tool_calls": [_PROBE_CALL]},
             {"role": "tool", "tool_call_id": "call_probe", "content": _RESULT}],
            tools=[_PROBE_TOOL], **_PROBE_DATE,
        )
    except InvalidRequestError as exc:
        return TemplateProbe(None, f"the template refused a tool conversation ({exc})")
    if _FN not in listed or _ARG not in listed:
        return TemplateProbe(None, "the template does not list the tools it is given")
    if _RESULT not in history:
        return TemplateProbe(None, "the template drops tool results")
    start = history.find(_ASSISTANT_HEADER)
    if start < 0:
        return TemplateProbe(None, "the template writes no assistant turn for a past call")
    turn = history[start + len(_ASSISTANT_HEADER):]
    ends = [(turn.find(stop), stop) for stop in LLAMA3_TEMPLATE_STOPS if turn.find(stop) >= 0]
    if not ends:
        return TemplateProbe(None, "the template ends a past call with neither <|eom_id|> nor <|eot_id|>")
    body = turn[: min(ends)[0]]
    body = body.removeprefix(LLAMA3_OPENING)
    try:
        call = json.loads(body)
    except ValueError:
        return TemplateProbe(None, f"the template writes a past call as {body[:80]!r}, not as one JSON object")
    if not isinstance(call, dict):
        return TemplateProbe(None, "the template writes a past call as JSON that is not an object")
    keys = list(call)
    type_field = keys[:1] == ["type"] and call["type"] == "function"
    rest = keys[1:] if type_field else keys
    if len(rest) != 2 or call[rest[0]] != _FN or call[rest[1]] != {_ARG: _VALUE}:
        return TemplateProbe(None, f"the template's call object {body[:80]!r} is not {{name, arguments}}")
    expected = json.dumps({k: call[k] for k in keys}, ensure_ascii=False)
    if body != expected:  # the grammar writes json.dumps spacing; a template that differs would drift
        return TemplateProbe(None, f"the template spaces a call as {body[:80]!r}, not as {expected[:80]!r}")
    fmt = CallFormat(
        opening_token=LLAMA3_OPENING, json_at_start=True, name_key=rest[0], arguments_key=rest[1],
        type_field=type_field, parallel_array=False, stop_tokens=LLAMA3_TEMPLATE_STOPS,
    )
    return TemplateProbe(fmt)


_probes: weakref.WeakKeyDictionary[ChatTemplate, TemplateProbe] = weakref.WeakKeyDictionary()
_probes_lock = threading.Lock()


def probe_template(template: ChatTemplate) -> TemplateProbe:
    """Whether (and how) `template` renders tool conversations; computed once per template (a few ms)."""
    with _probes_lock:
        cached = _probes.get(template)
    if cached is not None:
        return cached
    probe = _probe(template)
    with _probes_lock:
        _probes[template] = probe
    return probe


class TemplateToolStrategy:
    """Tool conversations rendered by the model's own chat template (see the module docstring)."""

    def __init__(self, chat_template: ChatTemplate, call_format: CallFormat, chat_format: str = "llama3") -> None:
        self.chat_template = chat_template
        self.call_format = call_format
        self.chat_format = chat_format

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolDefinition] = (),
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        openai_tools = [t.as_sent() for t in tools] or None  # transformers passes None without tools
        return self.chat_template.render(
            messages, add_generation_prompt=add_generation_prompt, tools=openai_tools, **template_kwargs
        )
