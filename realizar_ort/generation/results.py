"""What a generation returns: the streamed deltas, the folded result, usage and logprobs.

A non-streaming result is the fold of the stream (`GenerationResult.fold`), so both paths give the same
text, tokens and finish reason by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FinishReason",
    "GenerationDelta",
    "GenerationResult",
    "TokenLogprob",
    "TopLogprob",
    "Usage",
]

# "stop": a stop token id or stop string ended the sequence; "length": max_tokens reached.
# "tool_calls" is set by the tool-calling layer above the engine, never by the engine itself.
FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int  # every generated token, including a stop token that ended the sequence
    total_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (OpenAI's prompt_tokens_details)


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str  # the token's own text (lossy for a partial UTF-8 character; see `bytes`)
    bytes: tuple[int, ...]  # the token's exact UTF-8 bytes (OpenAI's `bytes`)
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one generated token under the model's raw distribution (before logit
    processors, penalties and temperature), with the `top_logprobs` most likely alternatives."""

    token_id: int
    token: str
    bytes: tuple[int, ...]
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationDelta:
    """One step of a stream: the new text (stop strings held back, never emitted) and the new tokens.

    `text` may be empty while tokens arrive (an incomplete UTF-8 character or text that might still
    become a stop string). The last delta of a stream has `finish_reason` and `usage` set.
    `replaces` (0 or 1): how many of the stream's earlier token ids `token_ids` replace (fast-forward's
    token healing: a sampled token and the forced bytes after it become the tokenizer's own tokens, say
    `t` + `ags":` -> `tags` `":`). Their bytes begin `token_ids`' bytes; `text` does not repeat them.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    stop_reason: str | int | None = None  # the matched stop string or stop token id (last delta only)
    replaces: int = 0


@dataclass(frozen=True)
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    usage: Usage
    logprobs: list[TokenLogprob] | None = None
    stop_reason: str | int | None = None

    @classmethod
    def fold(cls, deltas: Iterable[GenerationDelta]) -> GenerationResult:
        """Concatenate a complete stream into one result (consumes the iterable)."""
        text: list[str] = []
        token_ids: list[int] = []
        logprobs: list[TokenLogprob] | None = None
        last: GenerationDelta | None = None
        for delta in deltas:
            text.append(delta.text)
            if delta.replaces:
                del token_ids[len(token_ids) - delta.replaces :]
            token_ids.extend(delta.token_ids)
            if delta.logprobs is not None:
                logprobs = (logprobs or []) + list(delta.logprobs)
            last = delta
        if last is None or last.finish_reason is None or last.usage is None:
            raise ValueError("the stream ended without a final delta (was it cancelled?)")
        return cls(
            text="".join(text),
            token_ids=token_ids,
            finish_reason=last.finish_reason,
            usage=last.usage,
            logprobs=logprobs,
            stop_reason=last.stop_reason,
        )
