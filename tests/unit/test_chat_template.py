"""Chat templates rendered as transformers renders them: sandboxed jinja2 with HF's helpers."""

from __future__ import annotations

import pytest

from realizar_ort.chat_template import ChatTemplate, ChatTemplateError
from realizar_ort.errors import InvalidRequestError

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_chatml_render_with_and_without_generation_prompt() -> None:
    template = ChatTemplate(CHATML)
    messages = [{"role": "user", "content": "Hi"}]
    assert template.render(messages) == (
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.render(messages, add_generation_prompt=False).endswith("Hi<|im_end|>\n")


def test_trim_and_lstrip_blocks_like_transformers() -> None:
    source = "{%- for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}"
    assert (
        ChatTemplate(source).render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
        == "[a]\n[b]\n"
    )


def test_special_tokens_and_kwargs_are_variables() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{{ date_string }}|{{ tools is none }}|{{ documents is none }}", {"bos_token": "<s>"}
    )
    assert template.render([], date_string="26 Jul 2024") == "<s>26 Jul 2024|True|True"


def test_tojson_keeps_unicode_and_does_not_html_escape() -> None:
    template = ChatTemplate("{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}")
    tools = [{"name": "f<x>", "desc": "café & 日本"}]
    out = template.render([], tools=tools)
    assert out.startswith('[{"name": "f<x>", "desc": "café & 日本"}]|{\n  "name"')


def test_raise_exception_becomes_an_invalid_request() -> None:
    template = ChatTemplate(
        "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok"
    )
    assert template.render([{"role": "user", "content": ""}]) == "ok"
    with pytest.raises(InvalidRequestError, match="first must be user") as info:
        template.render([{"role": "assistant", "content": ""}])
    assert info.value.param == "messages"


def test_loop_controls_generation_tag_and_strftime() -> None:
    source = (
        "{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}|{{ strftime_now('%Y') | length }}"
    )
    out = ChatTemplate(source).render([{"role": "a", "content": "x"}, {"role": "skip", "content": "y"}])
    assert out == "x|4"


def test_sandbox_blocks_mutation_and_python_internals() -> None:
    with pytest.raises(InvalidRequestError):
        ChatTemplate("{{ messages.append({'role': 'x'}) }}").render([{"role": "user", "content": ""}])
    with pytest.raises(InvalidRequestError):
        ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}").render([])


def test_bad_messages_and_bad_templates() -> None:
    with pytest.raises(InvalidRequestError, match=r"messages\[0\]"):
        ChatTemplate(CHATML).render([{"content": "no role"}])
    with pytest.raises(InvalidRequestError):
        ChatTemplate(CHATML).render("not a list")  # type: ignore[arg-type]
    with pytest.raises(ChatTemplateError, match="line 1"):
        ChatTemplate("{% for x in %}")
