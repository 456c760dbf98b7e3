"""A live server on SmolLM2 + MiniLM, shared by the server tests for the whole session (one engine load).

``live`` is the uvicorn server (``live.url``), ``client`` the official ``openai`` client pointed at it,
``engines`` the (chat, embedding) engines behind it, ``config`` the app's config. Test modules that need a
differently configured server build their own from ``llm_config``.
"""

from __future__ import annotations

import openai
import pytest
from realizar_ort.server.app import create_app
from realizar_ort.server.live import LiveServer

from realizar_ort.config import Config, EmbeddingModelConfig, LlmModelConfig, ServerConfig, SessionConfig
from realizar_ort.embeddings.engine import EmbeddingEngine
from realizar_ort.generation.engine import ModelEngine


@pytest.fixture(scope="session")
def llm_config(smollm2_dir):
    return LlmModelConfig(path=smollm2_dir, max_batch_size=8, max_context=1024, max_queued=32,
                          default_max_tokens=32, session=SessionConfig(intra_op_threads=2))


@pytest.fixture(scope="session")
def engines(llm_config, minilm_dir):
    llm = ModelEngine.from_config(llm_config)
    emb = EmbeddingEngine.from_folder(minilm_dir)
    yield llm, emb
    llm.close()
    emb.close()


@pytest.fixture(scope="session")
def config(llm_config, minilm_dir):
    return Config(llm=llm_config, embedding=EmbeddingModelConfig(path=minilm_dir), server=ServerConfig(port=0))


@pytest.fixture(scope="session")
def live(config, engines):
    server = LiveServer(create_app(config, llm=engines[0], embedder=engines[1]))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(live):
    with openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c
