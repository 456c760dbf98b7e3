"""`ModelEngine`: the public, thread-safe face of the decode loop.

    engine = ModelEngine.from_folder("models/smollm2-135m-instruct")
    result = engine.chat([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=32, temperature=0))
    for delta in engine.generate_stream("Once upon a time", SamplingParams(max_tokens=16)):
        print(delta.text, end="")

Requests are validated here, in the caller's thread (prompt ids within the model's vocabulary, prompt +
max_tokens within the context), then queued for the scheduler thread, which batches every in-flight
request into shared forward passes. `generate` is the fold of `generate_stream`, so both give the same
answer. Any number of threads may call these methods at once.
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..chat_template import ChatTemplate
from ..config import LlmModelConfig
from ..errors import ContextLengthError, EngineClosedError, InvalidRequestError
from ..manifest import MANIFEST_FILE, LlmSpec, Manifest, ManifestError, load_manifest
from ..onnx_session import create_session
from ..tokenizer import Tokenizer
from .decoder import Decoder, create_decoder
from .detokenizer import TextStream
from .prefix_cache import PrefixCache
from .results import GenerationDelta, GenerationResult, TokenLogprob, TopLogprob
from .sampling import RequestSampler, SampledToken, SamplingParams
from .scheduler import Request, Scheduler

if TYPE_CHECKING:
    from ..tools.generate import ToolGenerationResult, ToolGenerationStream

__all__ = ["GenerationStream", "ModelEngine"]

_WAKE = object()  # put on a request's queue by cancel(): wakes a reader blocked in __next__


class GenerationStream(Iterator[GenerationDelta]):
    """Deltas of one request as they are generated. Iterate it; `cancel()` (or `close()`, or leaving a
    `with` block, or dropping it) abandons the request, and its batch slot is freed at the next step."""

    def __init__(self, request: Request, scheduler: Scheduler) -> None:
        self._request = request
        self._scheduler = scheduler
        self._done = False

    @property
    def request_id(self) -> int:
        return self._request.request_id

    @property
    def finished(self) -> bool:
        """True once the scheduler has produced this request's last delta (read or not)."""
        return self._request.finished

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> GenerationDelta:
        if self._done:
            raise StopIteration
        while True:
            try:
                item = self._request.out.get(timeout=1.0)
                break
            except queue.Empty:
                if self._done or self._request.cancelled:  # cancelled from another thread
                    raise StopIteration from None
                if not self._scheduler.alive:
                    self._done = True
                    raise EngineClosedError("the engine stopped before this request finished") from None
        if item is _WAKE or self._done:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._done = True
        return item

    def cancel(self) -> None:
        """Abandon the request (from any thread); a reader blocked in `__next__` stops at once."""
        if not self._done:
            self._done = True
            self._request.cancel()
            self._request.out.put(_WAKE)

    close = cancel

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        self.cancel()


class ModelEngine:
    """A loaded chat model plus its scheduler thread. Create with `from_folder` or `from_config`."""

    def __init__(self, config: LlmModelConfig, manifest: Manifest) -> None:
        if manifest.kind != "llm" or manifest.llm is None:
            raise ManifestError(f"{config.path} holds a {manifest.kind!r} model, not an llm")
        folder = Path(config.path)
        self.config = config
        self.model_dir = folder
        self.manifest = manifest
        self.spec: LlmSpec = manifest.llm
        self.name = config.name or folder.name
        self.tokenizer = Tokenizer.from_file(folder / manifest.tokenizer_file)
        self.tokenizer.token_bytes(0)  # build (and verify) the streaming byte table now, not per request
        self.vocab_size = self.spec.vocab_size  # the model's logits width: prompt ids must be below it
        self.max_context = min(config.max_context, self.spec.context_length)
        self.eos_token_ids = frozenset(self.spec.eos_token_ids)
        self.chat_template = self._load_template(folder)
        session = create_session(folder / manifest.onnx_file, config.session)
        self.provider = session.get_providers()[0]
        decoder = create_decoder(session, self.spec, config.max_batch_size, self.max_context)
        self._scheduler = Scheduler(
            decoder, config.max_batch_size, config.max_queued, config.prefill_chunk_tokens,
            self._prefix_cache(decoder, folder),
        )

    @classmethod
    def from_folder(cls, path: str | Path, config: LlmModelConfig | None = None) -> ModelEngine:
        """Load the model folder at `path` (manifest.json, model.onnx, tokenizer.json, ...). `config`
        supplies limits and session settings; its own `path` is ignored in favour of `path`."""
        if config is None:
            config = LlmModelConfig(path=Path(path))
        elif Path(config.path) != Path(path):
            config = dataclasses.replace(config, path=Path(path))
        return cls(config, load_manifest(path))

    @classmethod
    def from_config(cls, config: LlmModelConfig) -> ModelEngine:
        return cls(config, load_manifest(config.path))

    def _prefix_cache(self, decoder: Decoder, folder: Path) -> PrefixCache | None:
        """The prefix cache (`[models.llm] prefix_cache_mb`; 0 = off), keyed under this model and graph:
        the manifest's bytes (export source, format, graph kind, shapes) and the graph file's size. The
        Optimum concat graph has none (its decoder cannot load a prefix into a row)."""
        if self.config.prefix_cache_mb <= 0 or not decoder.prefix_caching:
            return None
        onnx = folder / self.manifest.onnx_file
        identity = (folder / MANIFEST_FILE).read_bytes() + f"|{onnx.stat().st_size}".encode()
        return PrefixCache(decoder.kv, self.config.prefix_cache_mb * 1024 * 1024, identity)

    def _load_template(self, folder: Path) -> ChatTemplate | None:
        if not self.manifest.chat_template_file:
            return None
        names = {"bos_token": self.spec.bos_token_id, "eos_token": self.spec.eos_token_ids[0]}
        names["pad_token"] = self.spec.pad_token_id
        special = {k: self.tokenizer.token_text(v) for k, v in names.items() if v is not None}
        return ChatTemplate.from_file(
            folder / self.manifest.chat_template_file, {k: v for k, v in special.items() if v}
        )

    # ---- prompts ------------------------------------------------------------------------------------
    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """The prompt text for `messages`, through the model's own chat template."""
        if self.chat_template is None:
            raise InvalidRequestError(
                f"model {self.name} has no chat template; send a plain prompt", "messages"
            )
        return self.chat_template.render(
            messages, add_generation_prompt=add_generation_prompt, **template_kwargs
        )

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids for a prompt: text is tokenized (special-token text becomes its id; BOS is
        prepended when the model wants it and the text lacks it); ids are checked as given."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=False)
            bos = self.spec.bos_token_id
            if self.spec.add_bos_token and bos is not None and (not ids or ids[0] != bos):
                ids.insert(0, bos)
        elif isinstance(prompt, Sequence) and not isinstance(prompt, (bytes, bytearray)):
            ids = list(prompt)
            for i, token in enumerate(ids):
                if isinstance(token, bool) or not isinstance(token, int):
                    raise InvalidRequestError(f"prompt token {i} must be an integer, got {token!r}", "prompt")
        else:
            raise InvalidRequestError(
                f"prompt must be a string or a list of token ids, got {type(prompt).__name__}", "prompt"
            )
        if not ids:
            raise InvalidRequestError("prompt is empty", "prompt")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"token id {bad} is outside the model's vocabulary (0..{self.vocab_size - 1})", "prompt"
            )
        return ids

    # ---- generation ---------------------------------------------------------------------------------
    def generate_stream(
        self, prompt: str | Sequence[int], params: SamplingParams | None = None
    ) -> GenerationStream:
        """Queue a request and return its stream of deltas. Raises `InvalidRequestError`,
        `ContextLengthError` or `QueueFullError` up front, before anything is queued."""
        params = self._check_params(params)
        prompt_ids = self.encode_prompt(prompt)
        request = Request(
            prompt_ids=prompt_ids,
            params=params,
            max_tokens=self._resolve_max_tokens(len(prompt_ids), params),
            stop_ids=frozenset(params.stop_token_ids)
            | (frozenset() if params.ignore_eos else self.eos_token_ids),
            sampler=RequestSampler(params, prompt_ids, self.vocab_size),
            text=TextStream(self.tokenizer, params.stop, params.skip_special_tokens),
            to_logprob=self._to_logprob if params.wants_logprobs else None,
            forcer=self._forcer(params),
        )
        self._scheduler.submit(request)
        return GenerationStream(request, self._scheduler)

    def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> GenerationResult:
        """Generate to the end and return the folded result (blocks the calling thread only)."""
        with self.generate_stream(prompt, params) as stream:
            return GenerationResult.fold(stream)

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams | None = None,
        **template_kwargs: Any,
    ) -> GenerationStream:
        return self.generate_stream(self.render_chat(messages, **template_kwargs), params)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams | None = None,
        **template_kwargs: Any,
    ) -> GenerationResult:
        return self.generate(self.render_chat(messages, **template_kwargs), params)

    # ---- tool calling (realizar_ort.tools.generate does the work) -----------------------------------
    def generate_with_tools(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        tool_choice: Any = "auto",
        parallel_tool_calls: bool | None = None,
        params: SamplingParams | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ToolGenerationResult:
        """A chat turn that ends in text and/or tool calls; every call is valid against its tool's schema.

        `tools`: OpenAI `tools` dicts or `ToolDefinition`s; `tool_choice`: "auto" | "required" | "none" |
        {"type": "function", "function": {"name": ...}} (OpenAI's shapes); `parallel_tool_calls`: None lets the model's tool format
        decide (Llama 3's JSON format holds one call per turn); `template_kwargs`: extra chat-template
        variables (e.g. ``date_string``)."""
        from ..tools.generate import generate_with_tools

        return generate_with_tools(self, messages, tools, tool_choice, parallel_tool_calls, params, template_kwargs)

    def generate_with_tools_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any],
        tool_choice: Any = "auto",
        parallel_tool_calls: bool | None = None,
        params: SamplingParams | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ToolGenerationStream:
        """The streaming form of `generate_with_tools`: deltas carry content and tool-call fragments."""
        from ..tools.generate import generate_with_tools_stream

        return generate_with_tools_stream(self, messages, tools, tool_choice, parallel_tool_calls, params,
                                          template_kwargs)

    def _check_params(self, params: SamplingParams | None) -> SamplingParams:
        if params is None:
            return SamplingParams()
        if not isinstance(params, SamplingParams):
            raise InvalidRequestError(f"params must be SamplingParams, got {type(params).__name__}", "params")
        return params

    def _forcer(self, params: SamplingParams) -> Any:
        """The logit processor whose forced tokens this request takes without sampling (fast-forward): its
        only processor, when that one can say what its grammar forces; None when fast-forward is off here or
        for the request, or when logprobs are wanted (forced tokens have none)."""
        if not (self.config.fast_forward and params.fast_forward) or params.wants_logprobs:
            return None
        processors = params.logit_processors
        if len(processors) != 1 or not callable(getattr(processors[0], "forced_tokens", None)):
            return None
        return processors[0]

    def check_context(self, prompt_tokens: int, params: SamplingParams | None = None) -> int:
        """The max_tokens a prompt of `prompt_tokens` tokens would run with under `params`, or
        `ContextLengthError` now: the cheap check callers run before expensive setup (grammar compiles)."""
        return self._resolve_max_tokens(prompt_tokens, self._check_params(params))

    def _resolve_max_tokens(self, prompt_tokens: int, params: SamplingParams) -> int:
        """Explicit max_tokens must fit; unset max_tokens is the config default clamped to what is left."""
        room = self.max_context - prompt_tokens
        if room < 1:
            raise ContextLengthError(
                f"the prompt has {prompt_tokens} tokens; this model's context is {self.max_context} tokens, "
                "which leaves no room to generate"
            )
        if params.max_tokens is None:
            return min(self.config.default_max_tokens, room)
        if params.max_tokens > room:
            raise ContextLengthError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({params.max_tokens}) exceeds this model's "
                f"context of {self.max_context} tokens; lower max_tokens to at most {room}",
                param="max_tokens",
            )
        return params.max_tokens

    def _to_logprob(self, sampled: SampledToken) -> TokenLogprob:
        def piece(token_id: int) -> tuple[str, tuple[int, ...]]:
            data = self.tokenizer.token_bytes(token_id)
            return data.decode("utf-8", errors="replace"), tuple(data)

        top = tuple(TopLogprob(i, *piece(i), lp) for i, lp in zip(sampled.top_ids, sampled.top_logprobs))
        return TokenLogprob(sampled.token_id, *piece(sampled.token_id), float(sampled.logprob or 0.0), top)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters for metrics: running batch size, queued requests, tokens, step timings."""
        return {
            "model": self.name,
            "provider": self.provider,
            "max_context": self.max_context,
            **self._scheduler.stats(),
        }

    def close(self) -> None:
        """Stop the scheduler; in-flight and queued requests end with `EngineClosedError`."""
        self._scheduler.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
