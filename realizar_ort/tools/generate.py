"""`generate_with_tools`: a chat turn that ends in text, in tool calls, or both, with every call valid.

    result = generate_with_tools(engine, messages, tools, tool_choice="auto")
    result.content, result.tool_calls, result.finish_reason     # "tool_calls" when the model called

Per request: the messages and tools are validated (`InvalidRequestError` naming the field), the model's
`ToolPromptTemplate` renders the prompt, the call grammar (the union of the tools' call bodies, or the
named tool's) is compiled (cached), and a `HybridSampler` joins the request's logit processors. The
reply is read back token by token: text is content; from the call opening on, the call body's text goes
through `CallScanner`, which yields each call's name and argument fragments as they are generated.

One code path: `generate_with_tools` is the fold of `generate_with_tools_stream`, so the streamed deltas
add up to exactly the non-streaming result. A call cut off by ``max_tokens`` keeps its partial arguments
text (`ToolCall.arguments` is None) with ``finish_reason="length"``, as OpenAI does; call-looking text
that never became a call (no grammar was running) stays content (`parse_tool_calls`).

`CallScanner` and `parse_tool_calls` live in `tool_parsing`.

Costs: prompt rendering and validation are microseconds; the first request for a tool set compiles its
grammar (milliseconds, then cached); per token, the sampler's mask (see `hybrid_sampler`) and a few
string operations here. Thread-safety: each call builds its own objects; an engine serves many callers.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ..errors import InvalidRequestError
from ..generation.results import FinishReason, GenerationDelta, Usage
from ..generation.sampling import SamplingParams
from ..grammar.forced import ForcedTokenizer
from ..grammar.matcher import GrammarError, TokenVocabulary, UnsupportedSchemaError, compile_json_schema
from .definitions import (
    ToolCall,
    ToolChoice,
    ToolDefinition,
    new_call_id,
    normalize_messages,
    parse_tool_choice,
    parse_tools,
)
from .hybrid_sampler import CallTokenTables, HybridSampler, call_token_tables
from .parsing import CallEvent, CallScanner
from .prompts import CallFormat, ToolPromptTemplate, strategy_for

__all__ = [
    "MAX_PARALLEL_CALLS",
    "ToolCallDelta",
    "ToolGenerationDelta",
    "ToolGenerationResult",
    "ToolGenerationStream",
    "generate_with_tools",
    "generate_with_tools_stream",
    "render_tool_prompt",
]

MAX_PARALLEL_CALLS = 8  # calls one turn may hold when the format allows several
CALL_WHITESPACE = 0  # whitespace bytes the call grammar allows at each structural point (", " / ": ")


# ==================================================================================== results
@dataclass(frozen=True)
class ToolCallDelta:
    """A fragment of one tool call in a stream. `id` and `name` come only in a call's first delta."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ToolGenerationDelta:
    """One step of a tool-calling stream: new content text and/or tool-call fragments. The last delta has
    `finish_reason` and `usage`."""

    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    replaces: int = 0  # earlier token ids that `token_ids` replace (see `GenerationDelta.replaces`)


@dataclass(frozen=True)
class ToolGenerationResult:
    """A finished assistant turn: `content` (None when the turn is only calls) and `tool_calls`."""

    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    usage: Usage
    token_ids: list[int] = field(default_factory=list)

    @classmethod
    def fold(cls, deltas: Iterable[ToolGenerationDelta]) -> ToolGenerationResult:
        """Concatenate a complete stream (consumes it)."""
        content: list[str] = []
        token_ids: list[int] = []
        calls: dict[int, dict[str, Any]] = {}
        last: ToolGenerationDelta | None = None
        for delta in deltas:
            content.append(delta.content)
            if delta.replaces:
                del token_ids[len(token_ids) - delta.replaces :]
            token_ids.extend(delta.token_ids)
            for part in delta.tool_calls:
                call = calls.setdefault(part.index, {"id": None, "name": None, "arguments": []})
                call["id"] = call["id"] or part.id
                call["name"] = call["name"] or part.name
                call["arguments"].append(part.arguments)
            last = delta
        if last is None or last.finish_reason is None or last.usage is None:
            raise ValueError("the stream ended without a final delta (was it cancelled?)")
        tool_calls = tuple(
            ToolCall.from_text(c["name"], "".join(c["arguments"]), c["id"]) for _, c in sorted(calls.items())
        )
        text = "".join(content)
        return cls(
            content=None if tool_calls and not text else text,
            tool_calls=tool_calls,
            finish_reason=last.finish_reason,
            usage=last.usage,
            token_ids=token_ids,
        )

    def to_openai_message(self) -> dict[str, Any]:
        """The OpenAI ``choices[0].message``."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        return message


# ==================================================================================== request setup
@dataclass(frozen=True)
class _ToolRequest:
    strategy: ToolPromptTemplate
    tools: tuple[ToolDefinition, ...]
    choice: ToolChoice
    tables: CallTokenTables
    parallel: bool
    prompt: str | list[int]  # token ids when the engine could count them up front
    params: SamplingParams
    formatted: bool = False  # a response format applies: a reply that is not a call is JSON in that format


def _model_dir(engine: Any) -> Path:
    return Path(engine.model_dir)


def _vocabulary(engine: Any, stop_ids: Sequence[int]) -> TokenVocabulary:
    return TokenVocabulary.from_tokenizer_file(
        _model_dir(engine) / engine.manifest.tokenizer_file, vocab_size=engine.vocab_size,
        stop_token_ids=tuple(stop_ids),
    )


def _answer_grammar(vocab: TokenVocabulary, response_format: Mapping[str, Any]) -> Any:
    """The grammar a reply that is not a call must match (a response format next to the tools)."""
    try:
        return compile_json_schema(dict(response_format), vocab, whitespace=CALL_WHITESPACE)
    except UnsupportedSchemaError as exc:
        raise InvalidRequestError(f"response_format cannot be enforced: {exc}", "response_format") from exc
    except GrammarError as exc:
        raise InvalidRequestError(f"response_format: {exc}", "response_format") from exc


def _call_grammar(engine: Any, call_format: CallFormat, tools: Sequence[ToolDefinition], stop_ids: Sequence[int],
                  all_tools: Sequence[ToolDefinition], parallel: bool) -> Any:
    vocab = _vocabulary(engine, stop_ids)
    try:
        schema = call_format.call_schema(tools, MAX_PARALLEL_CALLS if parallel else 1)
        # closed objects (additionalProperties absent = false), as before the grammar followed the spec's
        # default: a call must end within max_tokens, and open objects let a weak model add keys forever
        return compile_json_schema(schema, vocab, whitespace=CALL_WHITESPACE, strict=True)
    except GrammarError as exc:
        for i, tool in enumerate(all_tools):  # name the tool whose schema is at fault
            if tool not in tools:
                continue
            try:
                compile_json_schema(call_format.call_schema([tool]), vocab, whitespace=CALL_WHITESPACE, strict=True)
            except UnsupportedSchemaError as inner:
                raise InvalidRequestError(
                    f"tools[{i}].function.parameters cannot be enforced: {inner}", f"tools[{i}].function.parameters"
                ) from inner
            except GrammarError as inner:
                raise InvalidRequestError(
                    f"tools[{i}].function.parameters: {inner}", f"tools[{i}].function.parameters"
                ) from inner
        raise InvalidRequestError(f"the tools' schemas cannot be enforced together: {exc}", "tools") from exc


def render_tool_prompt(
    engine: Any, messages: Any, tools: Any, template_kwargs: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """The exact prompt a tool-calling turn on `engine` starts from (what ``/tokenize`` shows): messages
    normalised (past calls' arguments parsed), rendered by the model's tool strategy with
    `template_kwargs` (the request's ``chat_template_kwargs``). Raises `InvalidRequestError`."""
    definitions = tools if _is_definitions(tools) else parse_tools(tools)
    strategy = strategy_for(engine.manifest, getattr(engine, "chat_template", None))
    return strategy.render(normalize_messages(messages), definitions, add_generation_prompt, **dict(template_kwargs or {}))


def _prepare(
    engine: Any, messages: Any, tools: Any, tool_choice: Any, parallel_tool_calls: bool | None,
    params: SamplingParams | None, response_format: Mapping[str, Any] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> _ToolRequest:
    definitions = tools if _is_definitions(tools) else parse_tools(tools)
    choice = parse_tool_choice(tool_choice, definitions)
    normalized = normalize_messages(messages)
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidRequestError(
            f"parallel_tool_calls must be a boolean, got {type(parallel_tool_calls).__name__}", "parallel_tool_calls"
        )
    if params is not None and not isinstance(params, SamplingParams):
        raise InvalidRequestError(f"params must be SamplingParams, got {type(params).__name__}", "params")
    strategy = strategy_for(engine.manifest, getattr(engine, "chat_template", None))
    call_format = strategy.call_format
    if parallel_tool_calls and not call_format.supports_parallel_calls and definitions and choice.mode != "none":
        raise InvalidRequestError(
            f"parallel_tool_calls=true is not supported by the {strategy.chat_format!r} tool format of model "
            f"{engine.manifest.name} (one call per turn); send parallel_tool_calls=false or leave it out",
            "parallel_tool_calls",
        )
    parallel = call_format.supports_parallel_calls and parallel_tool_calls is not False and choice.mode != "named"
    try:
        tables = call_token_tables(engine.tokenizer, engine.vocab_size, call_format)
    except ValueError as exc:
        raise InvalidRequestError(f"model {engine.manifest.name} cannot call tools: {exc}", "tools") from exc
    base = params or SamplingParams()
    # Cheap checks first: render and count the prompt, and refuse one over the context before compiling
    # the tools' grammar (seconds for many tools).
    try:
        prompt: str | list[int] = strategy.render(normalized, definitions, True, **dict(template_kwargs or {}))
    except RecursionError:  # a tool schema nested past what the prompt renderer can walk
        raise InvalidRequestError("tools: a tool's parameters schema is nested too deeply to render", "tools") from None
    if hasattr(engine, "check_context"):
        prompt = engine.encode_prompt(prompt)
        engine.check_context(len(prompt), base)
    processors = tuple(base.logit_processors)
    if response_format is not None and not isinstance(response_format, Mapping):
        raise InvalidRequestError("response_format must be a JSON Schema object", "response_format")
    formatted = response_format is not None and not choice.forces_call  # calls only under required/named
    if definitions or formatted:
        mode = "none" if choice.mode == "none" or not definitions else (
            "auto" if choice.mode == "auto" else "required")
        grammar = answer = None
        stops = tables.stop_ids.tolist()
        if mode != "none":
            selected = [t for t in definitions if t.name == choice.name] if choice.mode == "named" else list(definitions)
            grammar = _call_grammar(engine, call_format, selected, stops, definitions, parallel)
        if formatted:
            assert response_format is not None
            answer = _answer_grammar(_vocabulary(engine, stops), response_format)
        healing = getattr(getattr(engine, "config", None), "fast_forward_healing", False)
        forcer = ForcedTokenizer(grammar.vocab, engine.tokenizer, healing) if grammar is not None else None
        sampler = HybridSampler(tables, grammar, mode, json_at_start=call_format.json_at_start,
                                parallel=parallel and mode != "none", forcer=forcer, answer=answer)
        processors = (sampler,) + processors  # the grammar mask comes first
    stop_ids = tuple(dict.fromkeys(tuple(base.stop_token_ids) + tuple(int(t) for t in tables.stop_ids)))
    run_params = dataclasses.replace(base, logit_processors=processors, stop_token_ids=stop_ids)
    return _ToolRequest(strategy, definitions, choice, tables, parallel, prompt, run_params, formatted)


def _is_definitions(tools: Any) -> bool:
    return isinstance(tools, tuple) and all(isinstance(t, ToolDefinition) for t in tools) and bool(tools)


def _call_openings(request: _ToolRequest) -> tuple[bytes, ...]:
    """The compact bytes every call body of this request starts with, up to its arguments' value
    (``{"name":"get_weather","arguments":``), also inside a parallel array (``[{...``)."""
    fmt = request.strategy.call_format
    out = []
    for tool in request.tools:
        body = json.dumps(fmt.body(tool.name, None), separators=(",", ":"), ensure_ascii=False)
        opening = body[: body.rindex("null")].encode()
        out.append(opening)
        if request.parallel:
            out.append(b"[" + opening)
    return tuple(out)


# ==================================================================================== reading the reply
class _ReplyReader:
    """Turns the engine's deltas into content text and tool-call fragments, mirroring the sampler's
    decisions (same token rules): the reply's first token opens a call when it is the opening token or a
    "{" token ("[" too with parallel calls); later, only the opening token does (and only under "auto")."""

    def __init__(self, request: _ToolRequest, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        fmt = request.strategy.call_format
        self._tables = request.tables
        self._calls_allowed = bool(request.tools) and request.choice.mode != "none"
        self._auto = request.choice.mode == "auto"
        self._json_at_start = fmt.json_at_start
        self._starts = frozenset(request.tables.start_ids(request.parallel).tolist())
        self._stops = frozenset(int(t) for t in request.tables.stop_ids)
        self._mode = "start"  # start | pending | content | call
        # With a response format under "auto" a reply opening with JSON is a call or the formatted answer:
        # it stays "pending" while its text may still become a call body (see `_call_openings`).
        self._openings = _call_openings(request) if request.formatted and self._auto else ()
        self._pending_bytes = b""
        self._pending_text: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._scanner = CallScanner(fmt.name_key, (fmt.arguments_key,))
        self._ids: dict[int, str] = {}
        self.any_call = False
        self._last = -1  # the last token read
        self._skip = 0  # bytes read already that the next tokens spell again (token healing)

    def _bytes(self, token: int) -> bytes:
        data = self._tokenizer.token_bytes(token)
        if self._skip:
            cut = min(self._skip, len(data))
            data, self._skip = data[cut:], self._skip - cut
        return data

    def read(self, delta: GenerationDelta) -> ToolGenerationDelta:
        content: list[str] = []
        body: list[str] = []
        text_used = False
        if delta.replaces and self._last >= 0:  # healed: the new tokens spell the replaced one's bytes first
            self._skip += len(self._tokenizer.token_bytes(self._last))
        if delta.token_ids:
            self._last = delta.token_ids[-1]
        for token in delta.token_ids:
            if self._mode == "start":
                if self._calls_allowed and token == self._tables.opening_id:
                    self._mode = "call"
                    continue
                if self._openings:
                    self._mode = "pending"
                elif self._calls_allowed and self._json_at_start and token in self._starts:
                    self._mode = "call"
                else:
                    self._mode = "content"
            if self._mode == "pending":
                self._pending_bytes += self._bytes(token)
                decided = self._decide()
                if decided == "content" and not text_used:
                    content.extend(self._pending_text)
                    content.append(delta.text)
                    text_used = True
                elif decided == "call":
                    body.append(self._decoder.decode(self._pending_bytes))
                if decided is not None:
                    self._pending_bytes, self._pending_text = b"", []
                continue
            elif self._mode == "content" and self._auto and token == self._tables.opening_id:
                if not text_used:  # text released with this delta belongs to the tokens before the call
                    content.append(delta.text)
                    text_used = True
                self._mode = "call"
                continue
            if self._mode == "call" and token not in self._stops:
                body.append(self._decoder.decode(self._bytes(token)))
        if self._mode == "content" and not text_used:
            content.append(delta.text)
        if self._mode == "pending":  # undecided: keep the engine's text until the reply shows what it is
            self._pending_text.append(delta.text)
            if delta.finish_reason is not None:  # it ended still undecided: an answer after all
                content.extend(self._pending_text)
                self._pending_text = []
        if delta.finish_reason is not None and self._mode == "call":
            body.append(self._decoder.decode(b"", final=True))
        calls = self._call_deltas(self._scanner.feed("".join(body))) if body else ()
        finish = delta.finish_reason
        if finish is not None:
            content.append(self._leftover())
            if finish == "stop" and self.any_call and all(c.complete for c in self._scanner.result()):
                finish = "tool_calls"  # (a stop string can cut a call short: then it stays "stop")
        return ToolGenerationDelta(
            content="".join(content), tool_calls=calls, token_ids=tuple(delta.token_ids), finish_reason=finish,
            usage=delta.usage, replaces=delta.replaces,
        )

    def _decide(self) -> str | None:
        """"call" once the pending text begins with a call body's opening, "content" once it cannot, else
        None (still a prefix of some opening)."""
        text = self._pending_bytes
        if any(text.startswith(o) for o in self._openings):
            self._mode = "call"
            self.any_call = True
            return "call"
        if any(o.startswith(text) for o in self._openings):
            return None
        self._mode = "content"
        return "content"

    def _call_deltas(self, events: list[CallEvent]) -> tuple[ToolCallDelta, ...]:
        merged: dict[int, ToolCallDelta] = {}
        for event in events:
            self.any_call = True
            if event.name is not None:
                self._ids[event.index] = new_call_id()
                merged[event.index] = ToolCallDelta(event.index, self._ids[event.index], event.name, event.arguments)
            elif event.index in merged:
                prev = merged[event.index]
                merged[event.index] = dataclasses.replace(prev, arguments=prev.arguments + event.arguments)
            else:
                merged[event.index] = ToolCallDelta(event.index, arguments=event.arguments)
        return tuple(merged[i] for i in sorted(merged))

    def _leftover(self) -> str:
        """At the end: call text that never became a named call is content after all (fail-soft)."""
        if self._mode != "call" or self.any_call:
            return ""
        return self._scanner.text


class ToolGenerationStream(Iterator[ToolGenerationDelta]):
    """Iterator over a tool-calling turn's deltas; `cancel()` (or leaving a ``with`` block) frees the
    engine's batch slot at its next step."""

    def __init__(self, inner: Any, reader: _ReplyReader) -> None:
        self._inner = inner
        self._reader = reader

    def __iter__(self) -> ToolGenerationStream:
        return self

    def __next__(self) -> ToolGenerationDelta:
        return self._reader.read(next(self._inner))

    def cancel(self) -> None:
        self._inner.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def generate_with_tools_stream(
    engine: Any,
    messages: Any,
    tools: Any,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool | None = None,
    params: SamplingParams | None = None,
    response_format: Mapping[str, Any] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> ToolGenerationStream:
    """Start a tool-calling turn on `engine` (a `ModelEngine`) and stream its deltas.

    `messages`: OpenAI chat messages (system/user/assistant with ``tool_calls``/tool). `tools`: OpenAI
    ``tools`` (or a tuple of `ToolDefinition`). `tool_choice`: "auto", "required", "none", or
    ``{"type": "function", "function": {"name": ...}}``. `parallel_tool_calls`: None lets the format
    decide (several calls where it can express them), False allows one call, True insists on several
    being possible and is refused for one-call formats such as Llama 3's. `params`: sampling; the tool
    sampler goes first among its logit processors and the format's stop tokens are added.
    `response_format`: a JSON Schema (``{"type": "object"}`` for any object) a reply that is not a call
    must match: under "auto" the reply is a call or that JSON, under "none" only the JSON, under
    "required"/a named tool only calls. `template_kwargs`: extra chat-template variables (the request's
    ``chat_template_kwargs``, e.g. ``{"date_string": "25 Nov 2026"}``). Raises `InvalidRequestError`
    (naming the field) before anything is queued.
    """
    request = _prepare(engine, messages, tools, tool_choice, parallel_tool_calls, params, response_format,
                       template_kwargs)
    inner = engine.generate_stream(request.prompt, request.params)
    return ToolGenerationStream(inner, _ReplyReader(request, engine.tokenizer))


def generate_with_tools(
    engine: Any,
    messages: Any,
    tools: Any,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool | None = None,
    params: SamplingParams | None = None,
    response_format: Mapping[str, Any] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
) -> ToolGenerationResult:
    """Run a tool-calling turn to the end: the fold of `generate_with_tools_stream` (same arguments)."""
    with generate_with_tools_stream(engine, messages, tools, tool_choice, parallel_tool_calls, params,
                                    response_format, template_kwargs) as stream:
        return ToolGenerationResult.fold(stream)
