"""``config.toml``: which models to load and how to serve them.

Every section is a frozen dataclass; unknown keys and values of the wrong type or range are errors that
name the key and say what was expected. Paths are resolved relative to the config file.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Config",
    "ConfigError",
    "EmbeddingModelConfig",
    "LlmModelConfig",
    "RayServeConfig",
    "ServerConfig",
    "SessionConfig",
    "load_config",
]


class ConfigError(ValueError):
    """``config.toml`` has an unknown key or a bad value; the message names the key."""


@dataclass(frozen=True)
class SessionConfig:
    """How onnxruntime sessions are built (shared by both model kinds)."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0  # 0: onnxruntime's default (all physical cores)
    inter_op_threads: int = 1
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    huge_pages: bool = True  # put the loaded weights on 2 MiB pages where Linux allows (see huge_pages.py)


@dataclass(frozen=True)
class LlmModelConfig:
    path: Path
    name: str = ""  # the id clients use; defaults to the folder name
    source: str = ""  # where `make serve` exports it from when `path` is missing
    quantize: Literal["none", "gguf", "int4", "int8"] = "none"  # how that export writes the weights
    session: SessionConfig = field(default_factory=SessionConfig)
    max_batch_size: int = 16
    max_context: int = 2048  # prompt + generated tokens per sequence
    max_queued: int = 256
    default_max_tokens: int = 512
    prefill_chunk_tokens: int = 256  # prompt tokens prefilled per decode step while other streams run
    fast_forward: bool = True  # tokens a grammar forces are appended and fed without sampling (per request too)
    fast_forward_healing: bool = False  # a forced run after a sampled token: False, the model picks its first
    # token (one step); True, token healing (the tokenizer's own tokens across that boundary): grammar/forced.py
    grammar_compile_budget_s: float = 5.0  # one response_format schema's compile; past it a 400
    prefix_cache_mb: int = 512  # host RAM for KV of prompts seen before (0 = off; fused graph only)


@dataclass(frozen=True)
class EmbeddingModelConfig:
    path: Path
    name: str = ""
    source: str = ""
    session: SessionConfig = field(default_factory=SessionConfig)
    batch_size: int = 32
    max_wait_ms: float = 2.0  # how long concurrent embed() calls wait to share a batch
    overflow: Literal["truncate", "error"] = "truncate"  # inputs longer than the model's limit


@dataclass(frozen=True)
class RayServeConfig:
    """``[server.ray]``: how ``realizar-ort serve --ray`` scales its Ray Serve replicas.

    Ray Serve autoscales between ``min_replicas`` and ``max_replicas`` so that each replica has about
    ``target_ongoing_requests`` requests in flight; a replica accepts at most ``max_ongoing_requests`` at
    once (more wait in Serve's queue) and reserves ``num_cpus`` CPUs of the cluster. ``ingress`` is how HTTP
    reaches the replicas: ``"haproxy"``, Ray Serve's HAProxy ingress (HAProxy forwards each connection to a
    replica's own HTTP server), or ``"proxy"``, Serve's Python proxy actor (every request and SSE event is
    relayed through Ray). Both are Ray Serve's own; see server/ray_serve.py.
    """

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 4.0
    max_ongoing_requests: int = 32
    num_cpus: float = 1.0
    ingress: Literal["haproxy", "proxy"] = "haproxy"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout_s: float = 30.0  # the whole request body must arrive within this (else 408, connection closed)
    drain_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may run on (see server/shutdown.py)
    max_tools: int = 128  # tools per chat request (OpenAI's limit)
    max_schema_bytes: int = 256 * 1024  # JSON size of one tool's parameters or one response_format schema
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    ray: RayServeConfig = field(default_factory=RayServeConfig)


@dataclass(frozen=True)
class Config:
    llm: LlmModelConfig | None = None
    embedding: EmbeddingModelConfig | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    path: Path | None = None


# ---- loading ------------------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Parse and validate a ``config.toml``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return parse_config(raw, base_dir=path.resolve().parent, path=path)


def parse_config(raw: dict[str, Any], base_dir: Path, path: Path | None = None) -> Config:
    _check_keys(raw, {"models", "server"}, "")
    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("[models] must be a table")
    _check_keys(models, {"llm", "embedding"}, "models")
    llm = _build(LlmModelConfig, models["llm"], "models.llm", base_dir) if "llm" in models else None
    emb = _build(EmbeddingModelConfig, models["embedding"], "models.embedding", base_dir) if "embedding" in models else None
    server = _build(ServerConfig, raw.get("server", {}), "server", base_dir)
    return Config(llm=llm, embedding=emb, server=server, path=path)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            dotted = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown config key '{dotted}' (expected one of: {', '.join(sorted(allowed))})")


def _build(cls: type, table: Any, where: str, base_dir: Path) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(table, set(fields), where)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required config key '{key}'")
            continue
        values[name] = _convert(hints[name], table[name], key, base_dir)
    obj = cls(**values)
    _check_ranges(obj, where)
    return obj


def _convert(hint: Any, value: Any, key: str, base_dir: Path) -> Any:
    origin = typing.get_origin(hint)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config key '{key}' must be a non-empty path string, got {value!r}")
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base_dir / p)
    if hint in (SessionConfig, RayServeConfig):  # nested tables
        return _build(hint, value, key, base_dir)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            raise ConfigError(f"config key '{key}' must be a list of {item.__name__}, got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"config key '{key}' has an unsupported type")  # pragma: no cover - not used
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type")  # pragma: no cover


_POSITIVE = {
    "max_batch_size", "max_context", "max_queued", "default_max_tokens", "prefill_chunk_tokens", "batch_size",
    "max_body_bytes", "grammar_compile_budget_s", "max_replicas", "max_ongoing_requests", "target_ongoing_requests", "num_cpus",
    "body_timeout_s", "max_tools", "max_schema_bytes",
}


def _check_ranges(obj: Any, where: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in _POSITIVE and value <= 0:
            raise ConfigError(f"config key '{where}.{f.name}' must be > 0, got {value}")
        if f.name in ("intra_op_threads", "inter_op_threads") and value < 0:
            raise ConfigError(f"config key '{where}.{f.name}' must be >= 0, got {value}")
        if f.name == "port" and not 0 <= value <= 65535:
            raise ConfigError(f"config key '{where}.port' must be in 0..65535, got {value}")
        if f.name == "prefix_cache_mb" and value < 0:
            raise ConfigError(f"config key '{where}.prefix_cache_mb' must be >= 0 (0 turns the cache off), got {value}")
        if f.name in ("max_wait_ms", "drain_timeout_s") and value < 0:
            raise ConfigError(f"config key '{where}.max_wait_ms' must be >= 0, got {value}")
        if f.name == "providers" and not value:
            raise ConfigError(f"config key '{where}.providers' must name at least one provider")
        if f.name == "min_replicas" and value < 0:
            raise ConfigError(f"config key '{where}.min_replicas' must be >= 0, got {value}")
    if isinstance(obj, RayServeConfig) and obj.min_replicas > obj.max_replicas:
        raise ConfigError(f"config key '{where}.min_replicas' ({obj.min_replicas}) must be <= "
                          f"'{where}.max_replicas' ({obj.max_replicas})")
