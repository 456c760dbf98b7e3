"""Tool conversations through a model's own template: our renderer against transformers' apply_chat_template.

The template is ours (``realizar_ort/templates/llama3.jinja``, written in the structure of Meta's Llama
3.1/3.2 template: tools in the first user message or in the system message, JSON calls, ipython results,
built-in tools). Each conversation is rendered by the path a request takes (`normalize_messages`, then
`strategy_for` on a Llama 3 manifest, which picks `TemplateToolStrategy` after probing the template) and by
transformers (the oracle) from the same conversation as vLLM hands it over (past calls' JSON-string
arguments parsed into objects, developer -> system, text parts joined); the bytes must be identical.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from realizar_ort.chat_template import ChatTemplate
from realizar_ort.errors import InvalidRequestError
from realizar_ort.tools.definitions import normalize_messages, parse_tools
from realizar_ort.tools.prompts import Llama3ToolStrategy, strategy_for
from realizar_ort.tools.template_tools import TemplateToolStrategy, probe_template

transformers = pytest.importorskip("transformers", reason="the oracle needs the export extra (transformers)")

REPO = Path(__file__).resolve().parents[3]
OUR_TEMPLATE = (REPO / "realizar_ort" / "templates" / "llama3.jinja").read_text(encoding="utf-8")
DOCS_TEMPLATE = (Path(__file__).resolve().parent / "llama3_docs.jinja").read_text(encoding="utf-8")
SPECIAL = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
DATE = {"date_string": "25 Nov 2026"}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city <b> & 'quotes', Zürich too",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "minLength": 1},
        "filters": {"type": "object", "properties": {"site": {"type": "string"}, "year": {"type": "integer"}}},
        "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["query"]}}}
PING = {"type": "function", "function": {"name": "ping"}}  # no parameters at all


def call(name: str, arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def assistant_calls(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


SYSTEM = {"role": "system", "content": "You are a terse assistant.  "}
ROUND_TRIP = [
    user("Weather in Zürich?"),
    assistant_calls(call("get_weather", {"city": "Zürich", "unit": "celsius"})),
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 3, "sky": "clear"}'},
]

# (name, messages, tools, add_generation_prompt, extra template variables)
CONVERSATIONS: list[tuple[str, list, list, bool, dict]] = [
    ("plain chat", [user("Hi")], [], True, DATE),
    ("system and user", [SYSTEM, user("Hi")], [], True, DATE),
    ("multi-turn chat", [SYSTEM, user("Hi"), {"role": "assistant", "content": "Hello."}, user("Bye")], [], True, DATE),
    ("no generation prompt", [user("Hi"), {"role": "assistant", "content": "Hello."}], [], False, DATE),
    ("tools, no system", [user("Weather in Paris?")], [WEATHER], True, DATE),
    ("tools and system", [SYSTEM, user("Weather in Paris?")], [WEATHER], True, DATE),
    ("tools in the system message", [SYSTEM, user("Weather?")], [WEATHER], True,
     {**DATE, "tools_in_user_message": False}),
    ("several tools, nested schemas", [user("Find it")], [WEATHER, SEARCH, PING], True, DATE),
    ("tool round trip", ROUND_TRIP, [WEATHER], True, DATE),
    ("round trip with system", [SYSTEM, *ROUND_TRIP], [WEATHER], True, DATE),
    ("follow-up after a tool result",
     [*ROUND_TRIP, {"role": "assistant", "content": "3 °C and clear."}, user("And tomorrow?")], [WEATHER], True, DATE),
    ("two tool rounds",
     [*ROUND_TRIP, assistant_calls(call("search", {"query": "föhn", "filters": {"year": 2026}, "tags": []}, "call_2")),
      {"role": "tool", "tool_call_id": "call_2", "content": "no results"}], [WEATHER, SEARCH], True, DATE),
    ("plain-text tool result", [user("Ping"), assistant_calls(call("ping", {})),
                                {"role": "tool", "tool_call_id": "call_1", "content": "pong"}], [PING], True, DATE),
    ("tool history without tools", ROUND_TRIP, [], True, DATE),
    ("call with text beside it", [user("Weather?"), assistant_calls(call("get_weather", {"city": "Oslo"}),
                                                                    content="Let me check."),
                                  {"role": "tool", "tool_call_id": "call_1", "content": "[1, 2]"}], [WEATHER], True, DATE),
    ("ipython result role", [user("Weather?"), assistant_calls(call("get_weather", {"city": "Oslo"})),
                             {"role": "ipython", "content": "sunny"}], [WEATHER], True, DATE),
    ("developer message", [{"role": "developer", "content": "Answer in French."}, user("Hi")], [WEATHER], True, DATE),
    ("content as text parts", [user([{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Rome?"}])],
     [WEATHER], True, DATE),
    ("whitespace and escapes", [SYSTEM, user("  line one\n\tline \"two\" \\ <tag>  ")], [SEARCH], True, DATE),
    ("arguments with unicode and escapes",
     [user("Go"), assistant_calls(call("search", {"query": "naïve \"quoted\" \\ back\nslash", "tags": ["a", "é"]})),
      {"role": "tool", "tool_call_id": "call_1", "content": "{\"hits\": [\"ü\"]}"}], [SEARCH], True, DATE),
    ("built-in tools declared", [SYSTEM, user("Search the news")], [WEATHER], True,
     {**DATE, "builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]}),
    ("built-in tool call", [user("News?"), assistant_calls(call("brave_search", {"query": "today"})),
                            {"role": "ipython", "content": "headline"}], [WEATHER], True,
     {**DATE, "builtin_tools": ["brave_search"]}),
    ("custom call under built-in tools", ROUND_TRIP, [WEATHER], True, {**DATE, "builtin_tools": ["brave_search"]}),
    ("custom_tools variable", [user("Weather?")], [], True, {**DATE, "custom_tools": [WEATHER]}),
    ("knowledge cutoff override", [SYSTEM, user("Hi")], [WEATHER], True, {**DATE, "knowledge_cutoff": "June 2025"}),
    ("empty user message", [user("")], [WEATHER], True, DATE),
]


def vllm_style(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as vLLM hands it to transformers: arguments parsed, developer -> system, parts joined."""
    out = copy.deepcopy(messages)
    for m in out:
        if m["role"] == "developer":
            m["role"] = "system"
        if isinstance(m.get("content"), list):
            m["content"] = "".join(p["text"] for p in m["content"])
        for c in m.get("tool_calls") or ():
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    return out


@pytest.fixture(scope="module")
def oracle(llama3_tokenizer_json: Path) -> Any:
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(llama3_tokenizer_json), **SPECIAL)
    tokenizer.chat_template = OUR_TEMPLATE
    return tokenizer


def llama3_manifest() -> Any:
    """The part of a Llama 3 model's manifest that `strategy_for` reads."""
    return SimpleNamespace(name="llama3-under-test", llm=SimpleNamespace(chat_format="llama3"))


def test_there_are_at_least_20_conversations_covering_every_message_kind() -> None:
    assert len(CONVERSATIONS) >= 20
    roles = {m["role"] for _, messages, *_ in CONVERSATIONS for m in messages}
    assert roles == {"system", "developer", "user", "assistant", "tool", "ipython"}
    assert any(m.get("tool_calls") for _, messages, *_ in CONVERSATIONS for m in messages)


@pytest.mark.parametrize(("name", "messages", "tools", "add_generation_prompt", "variables"), CONVERSATIONS,
                         ids=[c[0] for c in CONVERSATIONS])
def test_our_rendering_equals_transformers(oracle: Any, name: str, messages: list, tools: list,
                                           add_generation_prompt: bool, variables: dict) -> None:
    strategy = strategy_for(llama3_manifest(), ChatTemplate(OUR_TEMPLATE, SPECIAL))
    assert isinstance(strategy, TemplateToolStrategy)
    ours = strategy.render(normalize_messages(messages), parse_tools(tools), add_generation_prompt, **variables)
    expected = oracle.apply_chat_template(vllm_style(messages), tools=tools or None, tokenize=False,
                                          add_generation_prompt=add_generation_prompt, **variables)
    assert ours == expected
    assert '\\"city\\"' not in ours and '"{\\"' not in ours.split("ipython")[0]  # arguments never double-encoded


def test_without_date_string_the_date_is_today_for_both(oracle: Any) -> None:
    strategy = strategy_for(llama3_manifest(), ChatTemplate(OUR_TEMPLATE, SPECIAL))
    for _ in range(3):  # the only per-day input: a render straddling midnight is retried
        before = oracle.apply_chat_template([user("Hi")], tools=[WEATHER], tokenize=False, add_generation_prompt=True)
        ours = strategy.render(normalize_messages([user("Hi")]), parse_tools([WEATHER]))
        again = strategy.render(normalize_messages([user("Hi")]), parse_tools([WEATHER]))
        after = oracle.apply_chat_template([user("Hi")], tools=[WEATHER], tokenize=False, add_generation_prompt=True)
        if before == after:
            break
    assert ours == again == before  # deterministic: nothing per request
    assert "Today Date: " in ours and "Today Date: 25 Nov 2026" not in ours


def test_tools_are_listed_as_the_client_sent_them(oracle: Any) -> None:
    """No defaults are filled in (PING has no parameters): the template sees the request's own dicts."""
    strategy = strategy_for(llama3_manifest(), ChatTemplate(OUR_TEMPLATE, SPECIAL))
    text = strategy.render(normalize_messages([user("Ping")]), parse_tools([PING]), **DATE)
    assert '"function": {\n        "name": "ping"\n    }' in text


# ---- the probe: which templates render tools, and the call format they show ------------------------------
def test_probe_reads_the_call_format_off_our_template() -> None:
    probe = probe_template(ChatTemplate(OUR_TEMPLATE, SPECIAL))
    fmt = probe.call_format
    assert fmt is not None, probe.reason
    assert (fmt.opening_token, fmt.name_key, fmt.arguments_key, fmt.type_field) == ("<|python_tag|>", "name",
                                                                                     "parameters", False)
    assert fmt.json_at_start and not fmt.parallel_array and set(fmt.stop_tokens) == {"<|eom_id|>", "<|eot_id|>"}


def test_probe_reads_the_docs_layout_with_python_tag_and_type_field() -> None:
    fmt = probe_template(ChatTemplate(DOCS_TEMPLATE, SPECIAL)).call_format
    assert fmt is not None and fmt.type_field and fmt.arguments_key == "parameters"


LLAMA30_LIKE = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
                " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
STRING_ARGS = OUR_TEMPLATE.replace("(call['arguments'] | tojson)", "((call['arguments'] | tojson) | tojson)")


@pytest.mark.parametrize(("source", "reason"), [
    (LLAMA30_LIKE, "does not list the tools"),
    (STRING_ARGS, "not {name, arguments}"),
    (OUR_TEMPLATE.replace("'<|eot_id|>' -}}\n        {%- endif", "'' -}}\n        {%- endif"), "not as one JSON object"),
    ("{{ raise_exception('no tools here') }}", "refused"),
])
def test_templates_that_cannot_render_tools_fall_back_to_our_strategy(source: str, reason: str) -> None:
    template = ChatTemplate(source, SPECIAL)
    probe = probe_template(template)
    assert probe.call_format is None and reason in probe.reason
    assert isinstance(strategy_for(llama3_manifest(), template), Llama3ToolStrategy)


def test_chat_template_kwargs_cannot_replace_request_variables() -> None:
    strategy = strategy_for(llama3_manifest(), ChatTemplate(OUR_TEMPLATE, SPECIAL))
    with pytest.raises(InvalidRequestError) as info:
        strategy.render(normalize_messages([user("Hi")]), parse_tools([WEATHER]), documents=[])
    assert info.value.param == "chat_template_kwargs"
