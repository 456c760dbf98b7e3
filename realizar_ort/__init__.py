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
    "ModelEngine": "generation.engine",
    "GenerationStream": "generation.engine",
    "SamplingParams": "generation.sampling",
    "GenerationResult": "generation.results",
    "GenerationDelta": "generation.results",
    "Usage": "generation.results",
    "LogitProcessor": "generation.logits",
    "FinishReason": "generation.results",
    "TokenLogprob": "generation.results",
    "TopLogprob": "generation.results",
    "Tokenizer": "tokenizer",
    "ChatTemplate": "chat_template",
    "ChatTemplateError": "chat_template",
    # enforcement
    "JsonGrammar": "grammar.matcher",
    "TokenVocabulary": "grammar.matcher",
    "CompiledGrammar": "grammar.matcher",
    "GrammarMatcher": "grammar.matcher",
    "compile_json_schema": "grammar.matcher",
    "GrammarError": "grammar.matcher",
    "UnsupportedSchemaError": "grammar.matcher",
    "HybridSampler": "tools.hybrid_sampler",
    # tools
    "ToolDefinition": "tools.definitions",
    "ToolCall": "tools.definitions",
    "ToolPromptTemplate": "tools.prompts",
    "Llama3ToolStrategy": "tools.prompts",
    "ChatMLToolStrategy": "tools.prompts",
    "generate_with_tools": "tools.generate",
    "generate_with_tools_stream": "tools.generate",
    # embeddings
    "EmbeddingEngine": "embeddings.engine",
    "EmbeddingResult": "embeddings.engine",
    "EmbeddingError": "embeddings.engine",
    "InputTooLongError": "embeddings.engine",
    "TokenIdOutOfRangeError": "embeddings.engine",
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
    "ToolChoice": "tools.definitions",
    "ToolGenerationResult": "tools.generate",
    "ToolGenerationDelta": "tools.generate",
    "ToolCallDelta": "tools.generate",
    "ToolGenerationStream": "tools.generate",
    "strategy_for": "tools.prompts",
    "parse_tool_calls": "tools.parsing",
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
    from .embeddings.engine import (
        EmbeddingEngine,
        EmbeddingError,
        EmbeddingResult,
        InputTooLongError,
        TokenIdOutOfRangeError,
    )
    from .errors import (
        ContextLengthError,
        EngineClosedError,
        InvalidRequestError,
        QueueFullError,
        RealizarError,
    )
    from .generation.engine import GenerationStream, ModelEngine
    from .generation.logits import LogitProcessor
    from .generation.results import (
        FinishReason,
        GenerationDelta,
        GenerationResult,
        TokenLogprob,
        TopLogprob,
        Usage,
    )
    from .generation.sampling import SamplingParams
    from .grammar.matcher import (
        CompiledGrammar,
        GrammarError,
        GrammarMatcher,
        JsonGrammar,
        TokenVocabulary,
        UnsupportedSchemaError,
        compile_json_schema,
    )
    from .manifest import Manifest, ManifestError, load_manifest
    from .tokenizer import Tokenizer
    from .tools.definitions import ToolCall, ToolChoice, ToolDefinition
    from .tools.generate import (
        ToolCallDelta,
        ToolGenerationDelta,
        ToolGenerationResult,
        ToolGenerationStream,
        generate_with_tools,
        generate_with_tools_stream,
    )
    from .tools.hybrid_sampler import HybridSampler
    from .tools.parsing import parse_tool_calls
    from .tools.prompts import ChatMLToolStrategy, Llama3ToolStrategy, ToolPromptTemplate, strategy_for
