"""How tools are shown to a model and what its calls look like: one `ToolPromptTemplate` per chat format.

A strategy renders a whole conversation (system text, the tool listing, past calls, tool results) and
describes a call in the model's output (`CallFormat`: the special token or leading ``{`` that opens one,
the JSON keys of its body, the stop tokens, whether several calls fit in one turn), so `HybridSampler`
knows when a call begins and which grammar takes over. `strategy_for(manifest, chat_template)` picks one
from the manifest's ``llm.chat_format`` and the model's template, never from the model's name.

- `template_tools.TemplateToolStrategy` (``chat_format = "llama3"`` with a template that renders tools,
  such as Meta's Llama 3.1/3.2 template or ours in ``realizar_ort/templates/llama3.jinja``): the model's
  own template renders everything, as transformers' ``apply_chat_template`` does; the call format is read
  off the template's rendering of a past call (see that module).
- `Llama3ToolStrategy` (``chat_format = "llama3"`` without a template, or with one that cannot render
  tools, e.g. Llama 3.0's): Meta's JSON-based custom tool calling for Llama
  3.1 / 3.2 / 3.3, from meta-llama/llama-models ``models/llama3_1/prompt_format.md`` ("JSON based tool
  calling", "Built-in tools full interaction") and ``models/llama3_2/text_prompt_format.md`` ("Zero shot
  function calling E2E format"): ``Environment: ipython`` in the system header, the tool listing in a
  user message of its own (or appended to the system message), the model's reply
  ``<|python_tag|>{"type": "function", "name": ..., "parameters": {...}}`` ended by ``<|eom_id|>``, tool
  results under the ``ipython`` role. Past calls are rendered as Meta's reference does
  (``models/llama3/tool_utils.py``: ``json.dumps({"type", "name", "parameters"})``). One call per turn
  ("Only single tool calls are supported as of now"). ``tests/unit/tools/llama3_docs.jinja`` renders the
  same text; the tests hold both to the documentation byte for byte.
- `ChatMLToolStrategy` (``chat_format = "chatml"``, SmolLM2): the tool schemas, an example call and the
  question share the first user message (SmolLM2-135M-Instruct calls get_weather for "What is the weather
  in Paris?" and still answers "What is 2+2?" in text when the listing sits next to the question; with the
  listing in the system message it answers both in text). The first user message, not the last: the
  listing then stays where it is as the conversation grows, so every turn's prompt starts with the
  previous turn's and the prefix cache reuses it (a one-question request renders the same either way);
  Meta's Llama 3.1 template places its tools in the first user message too. The reply is a bare
  ``{"name": ..., "arguments": {...}}`` at the start of the assistant turn; parallel calls are a JSON array
  of such objects. The rest of the conversation goes through the model's own chat template when given.

Rendering is pure string work (microseconds to a millisecond); strategies are immutable and thread-safe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..chat_template import ChatTemplate
from ..errors import InvalidRequestError
from ..manifest import Manifest
from .call_schema import scoped_arguments
from .definitions import ToolDefinition

__all__ = [
    "CallFormat",
    "ChatMLToolStrategy",
    "Llama3ToolStrategy",
    "ToolPromptTemplate",
    "pretty_json",
    "strategy_for",
]


@dataclass(frozen=True)
class CallFormat:
    """What a tool call looks like in a model's output.

    `opening_token`: special token that opens a call anywhere in the reply (Llama 3's ``<|python_tag|>``),
    or None. `json_at_start`: JSON at the very start of the reply is a call. A call body is a JSON object
    ``{["type": "function",] name_key: <tool name>, arguments_key: <arguments>}``. `parallel_array`:
    several calls of one turn are written as a JSON array of bodies (``[{...}, {...}]``, opened by ``[``);
    False when the format holds one call per turn. `stop_tokens`: special tokens that may end the turn
    after a call (all of them end generation).
    """

    opening_token: str | None
    json_at_start: bool
    name_key: str
    arguments_key: str
    type_field: bool
    parallel_array: bool
    stop_tokens: tuple[str, ...]

    @property
    def supports_parallel_calls(self) -> bool:
        return self.parallel_array

    def call_schema(self, tools: Sequence[ToolDefinition], max_parallel: int = 1) -> dict[str, Any]:
        """JSON Schema of what follows the opening: one call body (the union over `tools` of {name: const,
        arguments: its schema}), or with ``max_parallel > 1`` either one body or an array of 1 to
        `max_parallel` bodies. Each tool's local ``$ref`` pointers keep resolving against its own
        ``parameters`` (moved under ``$defs`` here: see `realizar_ort.tools.call_schema`)."""
        if not tools:
            raise ValueError("call_schema needs at least one tool")
        variants = []
        defs: dict[str, Any] = {}  # each tool's own $defs namespace (see .call_schema)
        for tool in tools:
            properties: dict[str, Any] = {}
            if self.type_field:
                properties["type"] = {"const": "function"}
            properties[self.name_key] = {"const": tool.name}
            properties[self.arguments_key], tool_defs = scoped_arguments(tool.name, tool.parameters)
            defs.update(tool_defs)
            variants.append(
                {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
            )
        one = variants[0] if len(variants) == 1 else {"anyOf": variants}
        if max_parallel > 1:
            if not self.parallel_array:
                raise ValueError("this call format holds one call per turn")
            one = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": max_parallel}]}
        return {**one, "$defs": defs} if defs else one

    def body(self, name: str, arguments: Any) -> dict[str, Any]:
        """A call body as a dict, keys in this format's order."""
        out: dict[str, Any] = {"type": "function"} if self.type_field else {}
        out[self.name_key] = name
        out[self.arguments_key] = arguments
        return out


@runtime_checkable
class ToolPromptTemplate(Protocol):
    """A chat format's tool prompting: rendering plus the shape of a call in the output."""

    chat_format: str
    call_format: CallFormat

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolDefinition] = (),
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """The prompt for normalised messages (see `realizar_ort.tools.definitions.normalize_messages`).
        `template_kwargs`: the request's ``chat_template_kwargs`` (template variables such as
        ``date_string``)."""
        ...


def pretty_json(value: Any, depth: int = 0) -> str:
    """JSON with 4-space indentation whose arrays of scalars stay on one line (``"required": ["n"]``), as
    in Meta's tool listings. Mirrors the ``pretty_json`` macro of ``tests/unit/tools/llama3_docs.jinja``."""
    pad = "    "
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{pad * (depth + 1)}{json.dumps(k, ensure_ascii=False)}: {pretty_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad * depth + "}"
    if isinstance(value, (list, tuple)):
        if not any(isinstance(v, (Mapping, list, tuple)) for v in value):
            return json.dumps(list(value), ensure_ascii=False)
        items = [pad * (depth + 1) + pretty_json(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad * depth + "]"
    return json.dumps(value, ensure_ascii=False)


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


class Llama3ToolStrategy:
    """Meta's Llama 3.1/3.2/3.3 format with JSON-based custom tools (see the module docstring)."""

    chat_format = "llama3"
    call_format = CallFormat(
        opening_token="<|python_tag|>",
        json_at_start=True,
        name_key="name",
        arguments_key="parameters",
        type_field=True,
        parallel_array=False,
        stop_tokens=("<|eom_id|>", "<|eot_id|>"),
    )

    def __init__(
        self,
        *,
        tools_in_user_message: bool = True,
        date_string: str | None = None,
        knowledge_cutoff: str = "December 2023",
        bos_token: str = "<|begin_of_text|>",
    ) -> None:
        self.tools_in_user_message = tools_in_user_message
        self.date_string = date_string
        self.knowledge_cutoff = knowledge_cutoff
        self.bos_token = bos_token

    def template_variables(self) -> dict[str, Any]:
        """The variables that make ``tests/unit/tools/llama3_docs.jinja`` render exactly what `render` does."""
        out: dict[str, Any] = {
            "tools_in_user_message": self.tools_in_user_message,
            "knowledge_cutoff": self.knowledge_cutoff,
            "bos_token": self.bos_token,
        }
        if self.date_string:
            out["date_string"] = self.date_string
        return out

    # ---- pieces ------------------------------------------------------------------------------------
    def render_tool_introduction(self, tools: Sequence[ToolDefinition]) -> str:
        listing = "".join(pretty_json(t.to_openai()) + "\n" for t in tools)
        return (
            "Answer the user's question by making use of the following functions if needed.\n"
            "If none of the function can be used, please say so.\n"
            "Here is a list of functions in JSON format:\n" + listing + "\nReturn function calls in JSON format."
        )

    def _system_text(self, system: str | None, tools: Sequence[ToolDefinition]) -> str | None:
        blocks: list[str] = []
        if tools:
            blocks.append("Environment: ipython\n")
        if self.date_string:
            blocks.append(f"Cutting Knowledge Date: {self.knowledge_cutoff}\nToday Date: {self.date_string}\n")
        text = "\n".join(blocks)
        if system is not None:
            text = text + "\n" + system + "\n" if blocks else system
        elif not blocks:
            return None
        if tools and not self.tools_in_user_message:
            text += "\n" + self.render_tool_introduction(tools) + "\n"
        return text

    def render_tool_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        out = []
        for call in calls:
            fn = call.get("function", call)
            arguments = fn.get("arguments")
            if isinstance(arguments, str):  # unparsed text: insert verbatim, never encode it twice
                name = json.dumps(fn["name"], ensure_ascii=False)
                out.append(f'<|python_tag|>{{"type": "function", "name": {name}, "parameters": {arguments}}}')
            else:
                out.append("<|python_tag|>" + json.dumps(self.call_format.body(fn["name"], arguments), ensure_ascii=False))
        return "".join(out) + "<|eom_id|>"

    def render_tool_result(self, message: Mapping[str, Any]) -> str:
        return "<|start_header_id|>ipython<|end_header_id|>\n\n" + _content(message) + "<|eot_id|>"

    # ---- whole prompt ------------------------------------------------------------------------------
    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolDefinition] = (),
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """`template_kwargs`: ``date_string`` overrides the constructor's; other variables are ignored
        (this format has no others)."""
        if template_kwargs.get("date_string"):
            dated = Llama3ToolStrategy(tools_in_user_message=self.tools_in_user_message,
                                       date_string=str(template_kwargs["date_string"]),
                                       knowledge_cutoff=self.knowledge_cutoff, bos_token=self.bos_token)
            return dated.render(messages, tools, add_generation_prompt)
        rest = list(messages)
        system = None
        if rest and rest[0]["role"] == "system":
            system = _content(rest.pop(0))
        parts = [self.bos_token]
        system_text = self._system_text(system, tools)
        if system_text is not None:
            parts.append("<|start_header_id|>system<|end_header_id|>\n\n" + system_text + "<|eot_id|>")
        if tools and self.tools_in_user_message:
            parts.append("<|start_header_id|>user<|end_header_id|>\n\n" + self.render_tool_introduction(tools) + "<|eot_id|>")
        for message in rest:
            role = message["role"]
            if role == "assistant" and message.get("tool_calls"):
                parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n" + _content(message))
                parts.append(self.render_tool_calls(message["tool_calls"]))
            elif role in ("tool", "ipython"):
                parts.append(self.render_tool_result(message))
            else:
                parts.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n" + _content(message) + "<|eot_id|>")
        if add_generation_prompt:
            parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
        return "".join(parts)


class ChatMLToolStrategy:
    """ChatML (``<|im_start|>role\\n...<|im_end|>``) with the tools in the first user message (SmolLM2)."""

    chat_format = "chatml"
    call_format = CallFormat(
        opening_token=None,
        json_at_start=True,
        name_key="name",
        arguments_key="arguments",
        type_field=False,
        parallel_array=True,
        stop_tokens=("<|im_end|>",),
    )

    def __init__(self, chat_template: ChatTemplate | None = None, default_system: str | None = None) -> None:
        """`chat_template`: the model's own template, used for everything but the tool parts (so a
        conversation without tools renders exactly as the model expects). Without one, plain ChatML with
        `default_system` when the conversation has no system message."""
        self.chat_template = chat_template
        self.default_system = default_system

    def render_tool_introduction(self, tools: Sequence[ToolDefinition]) -> str:
        listing = json.dumps([t.to_openai()["function"] for t in tools], ensure_ascii=False)
        example = json.dumps(self.call_format.body(tools[0].name, _example_arguments(tools[0].parameters)), ensure_ascii=False)
        return (
            "You are given a question and a set of possible functions. If a function helps answer the question, "
            f"respond with a JSON function call, e.g. {example}. If none of the functions helps, answer the "
            f"question directly.\n\nFunctions:\n{listing}"
        )

    def render_tool_calls(self, calls: Sequence[Mapping[str, Any]]) -> str:
        bodies = []
        for call in calls:
            fn = call.get("function", call)
            arguments = fn.get("arguments")
            if isinstance(arguments, str):
                bodies.append(f'{{"name": {json.dumps(fn["name"], ensure_ascii=False)}, "arguments": {arguments}}}')
            else:
                bodies.append(json.dumps(self.call_format.body(fn["name"], arguments), ensure_ascii=False))
        return bodies[0] if len(bodies) == 1 else "[" + ", ".join(bodies) + "]"

    def render_tool_result(self, message: Mapping[str, Any]) -> str:
        return "<|im_start|>tool\n" + _content(message) + "<|im_end|>\n"

    def prepare_messages(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolDefinition]
    ) -> list[dict[str, str]]:
        """Plain role/content messages: tools folded into the first user message (where they stay as the
        conversation grows: see the module docstring), calls into assistant text."""
        out: list[dict[str, str]] = []
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        for i, message in enumerate(messages):
            role, content = message["role"], _content(message)
            if role == "assistant" and message.get("tool_calls"):
                calls = self.render_tool_calls(message["tool_calls"])
                content = content + "\n" + calls if content else calls
            elif role == "ipython":
                role = "tool"
            elif i == first_user and tools:
                content = self.render_tool_introduction(tools) + "\n\nQuestion: " + content
            out.append({"role": role, "content": content})
        return out

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolDefinition] = (),
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """`template_kwargs` go to the model's chat template (plain ChatML has no variables)."""
        prepared = self.prepare_messages(messages, tools)
        if self.chat_template is not None:
            return self.chat_template.render(prepared, add_generation_prompt=add_generation_prompt, **template_kwargs)
        parts = []
        if self.default_system is not None and (not prepared or prepared[0]["role"] != "system"):
            parts.append(f"<|im_start|>system\n{self.default_system}<|im_end|>\n")
        parts.extend(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in prepared)
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)


def _example_arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Placeholder arguments for the example call: the required properties (or the first one)."""
    properties = schema.get("properties") or {}
    if not isinstance(properties, Mapping):
        return {}
    names = [n for n in schema.get("required") or [] if n in properties] or list(properties)[:1]
    return {n: _example_value(properties[n]) for n in names}


def _example_value(schema: Any) -> Any:
    if not isinstance(schema, Mapping):
        return "..."
    for key in ("examples", "enum"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema[key][0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return {"integer": 0, "number": 0, "boolean": True, "array": [], "object": {}, "null": None}.get(kind, "...")


def strategy_for(manifest: Manifest, chat_template: ChatTemplate | None = None, **options: Any) -> ToolPromptTemplate:
    """The tool strategy for a model, chosen by ``manifest.llm.chat_format`` and its chat template.

    ``llama3``: the model's own template (`template_tools.TemplateToolStrategy`) when `probe_template`
    finds that it renders tools, calls and results; otherwise `Llama3ToolStrategy` (no template, or one
    such as Llama 3.0's that ignores tools). ``chatml``: `ChatMLToolStrategy`, with the template for the
    tool-free parts. `options` go to our own strategies' constructors."""
    if manifest.llm is None:
        raise InvalidRequestError(f"model {manifest.name} is not a chat model; it cannot call tools", "tools")
    fmt = manifest.llm.chat_format
    if fmt == "llama3":
        if chat_template is not None and not options:
            from .template_tools import TemplateToolStrategy, probe_template  # builds on CallFormat above

            probe = probe_template(chat_template)
            if probe.call_format is not None:
                return TemplateToolStrategy(chat_template, probe.call_format)
        return Llama3ToolStrategy(**options)
    if fmt == "chatml":
        return ChatMLToolStrategy(chat_template=chat_template, **options)
    raise InvalidRequestError(f"model {manifest.name} has chat format {fmt!r}, which has no tool strategy", "tools")
