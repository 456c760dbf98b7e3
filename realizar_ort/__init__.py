"""realizar-ort: ONNX Runtime inference for agentic backends.

The public API, imported lazily so that ``import realizar_ort`` stays cheap (no onnxruntime or numba until
an engine or grammar is used)::

    from realizar_ort import ModelEngine, SamplingParams, EmbeddingEngine, JsonGrammar, ToolDefinition
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # generation
    "ModelEngine": "engine",
    "GenerationStream": "engine",
    "SamplingParams": "sampling",
    "GenerationResult": "generation",
    "GenerationDelta": "generation",
    "Usage": "generation",
    "LogitProcessor": "logits",
    "FinishReason": "generation",
    "TokenLogprob": "generation",
    "TopLogprob": "generation",
    "Tokenizer": "tokenizer",
    "ChatTemplate": "chat_template",
    "ChatTemplateError": "chat_template",
    # enforcement
    "JsonGrammar": "grammar",
    "TokenVocabulary": "grammar",
    "CompiledGrammar": "grammar",
    "GrammarMatcher": "grammar",
    "compile_json_schema": "grammar",
    "GrammarError": "grammar",
    "UnsupportedSchemaError": "grammar",
    "HybridSampler": "hybrid_sampler",
    # tools
    "ToolDefinition": "tools",
    "ToolCall": "tools",
    "ToolPromptTemplate": "tool_prompts",
    "Llama3ToolStrategy": "tool_prompts",
    "ChatMLToolStrategy": "tool_prompts",
    "generate_with_tools": "tool_generation",
    "generate_with_tools_stream": "tool_generation",
    # embeddings
    "EmbeddingEngine": "embedding",
    "EmbeddingResult": "embedding",
    "EmbeddingError": "embedding",
    "InputTooLongError": "embedding",
    "TokenIdOutOfRangeError": "embedding",
    # config, manifest, errors
    "Config": "config",
    "ConfigError": "config",
    "load_config": "config",
    "Manifest": "manifest",
    "ManifestError": "manifest",
    "load_manifest": "manifest",
    "RealizarError": "errors",
    "InvalidRequestError": "errors",
    "ContextLengthError": "errors",
    "QueueFullError": "errors",
    "EngineClosedError": "errors",
    "ToolChoice": "tools",
    "ToolGenerationResult": "tool_generation",
    "ToolGenerationDelta": "tool_generation",
    "ToolCallDelta": "tool_generation",
    "ToolGenerationStream": "tool_generation",
    "strategy_for": "tool_prompts",
    "parse_tool_calls": "tool_parsing",
}

__all__ = [
    "ChatMLToolStrategy",
    "ChatTemplate",
    "ChatTemplateError",
    "CompiledGrammar",
    "Config",
    "ConfigError",
    "ContextLengthError",
    "EmbeddingEngine",
    "EmbeddingError",
    "EmbeddingResult",
    "EngineClosedError",
    "FinishReason",
    "GenerationDelta",
    "GenerationResult",
    "GenerationStream",
    "GrammarError",
    "GrammarMatcher",
    "HybridSampler",
    "InputTooLongError",
    "InvalidRequestError",
    "JsonGrammar",
    "Llama3ToolStrategy",
    "LogitProcessor",
    "Manifest",
    "ManifestError",
    "ModelEngine",
    "QueueFullError",
    "RealizarError",
    "SamplingParams",
    "TokenIdOutOfRangeError",
    "TokenLogprob",
    "TokenVocabulary",
    "Tokenizer",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolDefinition",
    "ToolGenerationDelta",
    "ToolGenerationResult",
    "ToolGenerationStream",
    "ToolPromptTemplate",
    "TopLogprob",
    "UnsupportedSchemaError",
    "Usage",
    "compile_json_schema",
    "generate_with_tools",
    "generate_with_tools_stream",
    "load_config",
    "load_manifest",
    "parse_tool_calls",
    "strategy_for",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'realizar_ort' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .chat_template import ChatTemplate, ChatTemplateError
    from .config import Config, ConfigError, load_config
    from .embedding import (
        EmbeddingEngine,
        EmbeddingError,
        EmbeddingResult,
        InputTooLongError,
        TokenIdOutOfRangeError,
    )
    from .engine import GenerationStream, ModelEngine
    from .errors import (
        ContextLengthError,
        EngineClosedError,
        InvalidRequestError,
        QueueFullError,
        RealizarError,
    )
    from .generation import FinishReason, GenerationDelta, GenerationResult, TokenLogprob, TopLogprob, Usage
    from .grammar import (
        CompiledGrammar,
        GrammarError,
        GrammarMatcher,
        JsonGrammar,
        TokenVocabulary,
        UnsupportedSchemaError,
        compile_json_schema,
    )
    from .hybrid_sampler import HybridSampler
    from .logits import LogitProcessor
    from .manifest import Manifest, ManifestError, load_manifest
    from .sampling import SamplingParams
    from .tokenizer import Tokenizer
    from .tool_generation import (
        ToolCallDelta,
        ToolGenerationDelta,
        ToolGenerationResult,
        ToolGenerationStream,
        generate_with_tools,
        generate_with_tools_stream,
    )
    from .tool_parsing import parse_tool_calls
    from .tool_prompts import ChatMLToolStrategy, Llama3ToolStrategy, ToolPromptTemplate, strategy_for
    from .tools import ToolCall, ToolChoice, ToolDefinition
