"""``chat_template_kwargs``: extra chat-template variables a request may send (vLLM's field).

Accepted by ``/v1/chat/completions`` and ``/tokenize``, e.g. ``{"date_string": "25 Nov 2026"}`` for a
Llama 3 template's "Today Date" or ``{"tools_in_user_message": false}``. The keys become template
variables, as transformers' ``apply_chat_template(**kwargs)`` would pass them; they may not replace the
variables the request itself sets (``messages``, ``tools``, ...). Errors are 400s naming
``chat_template_kwargs`` or ``chat_template_kwargs.<key>``. Pure; linear in the field's size.
"""

from __future__ import annotations

import re
from typing import Any

from realizar_ort.chat_template import RESERVED_VARIABLES

from .errors import invalid
from .protocol_fields import short_repr, type_name

__all__ = ["MAX_TEMPLATE_KWARGS", "read_chat_template_kwargs"]

MAX_TEMPLATE_KWARGS = 64
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def read_chat_template_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """``data["chat_template_kwargs"]`` checked: an object of at most 64 variables named like identifiers."""
    value = data.get("chat_template_kwargs")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"chat_template_kwargs must be an object, got {type_name(value)}.", "chat_template_kwargs")
    if len(value) > MAX_TEMPLATE_KWARGS:
        raise invalid(f"chat_template_kwargs has {len(value)} entries; at most {MAX_TEMPLATE_KWARGS} are allowed.",
                      "chat_template_kwargs")
    for key in value:
        if not _IDENTIFIER.match(key):
            raise invalid(f"chat_template_kwargs key {short_repr(key)} is not a template variable name "
                          "(letters, digits and '_', not starting with a digit).", "chat_template_kwargs")
        if key in RESERVED_VARIABLES:
            raise invalid(f"chat_template_kwargs.{key} is set by the request itself and cannot be overridden.",
                          f"chat_template_kwargs.{key}")
    return dict(value)
