"""/v1/embeddings on the real MiniLM behind a live uvicorn, driven by the official openai client."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
from realizar_ort.server.app import create_app
from realizar_ort.server.live import LiveServer

from realizar_ort.config import Config, EmbeddingModelConfig, ServerConfig
from realizar_ort.embeddings.engine import EmbeddingEngine

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France.", "",
         "naïve café — 東京 🚀", "word " * 400]


@pytest.fixture(scope="module")
def embedder(minilm_dir):
    engine = EmbeddingEngine.from_folder(minilm_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def live(minilm_dir, embedder):
    config = Config(embedding=EmbeddingModelConfig(path=minilm_dir), server=ServerConfig(port=0))
    server = LiveServer(create_app(config, embedder=embedder))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live):
    with openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_float_embeddings_match_the_engine(client, embedder, minilm_dir):
    response = client.embeddings.create(model=minilm_dir.name, input=TEXTS, encoding_format="float")
    assert response.model == minilm_dir.name and response.object == "list"
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    expected = embedder.embed_with_usage(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(vectors, expected.vectors, rtol=0, atol=1e-6)
    assert response.usage.prompt_tokens == response.usage.total_tokens == expected.total_tokens


def test_base64_decodes_to_the_float_list(client, minilm_dir):
    floats = client.embeddings.create(model=minilm_dir.name, input=TEXTS[:2], encoding_format="float")
    b64 = client.embeddings.create(model=minilm_dir.name, input=TEXTS[:2], encoding_format="base64")
    for f, b in zip(floats.data, b64.data):
        decoded = np.frombuffer(base64.b64decode(b.embedding), dtype="<f4")
        assert np.array_equal(decoded, np.array(f.embedding, dtype=np.float32))


def test_default_client_call_round_trips(client, embedder, minilm_dir):
    """The openai client asks for base64 by default and decodes it itself."""
    response = client.embeddings.create(model=minilm_dir.name, input="Paris is the capital of France.")
    np.testing.assert_allclose(np.array(response.data[0].embedding, dtype=np.float32),
                               embedder.embed_numpy([TEXTS[1]])[0], rtol=0, atol=1e-6)


def test_token_id_inputs_equal_their_text(client, embedder, minilm_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    ids = [tok.encode(t, add_special_tokens=False).ids for t in TEXTS[:2]]
    by_ids = client.embeddings.create(model=minilm_dir.name, input=ids, encoding_format="float")
    by_text = client.embeddings.create(model=minilm_dir.name, input=TEXTS[:2], encoding_format="float")
    np.testing.assert_allclose(np.array([d.embedding for d in by_ids.data]),
                               np.array([d.embedding for d in by_text.data]), atol=1e-6)
    single = client.embeddings.create(model=minilm_dir.name, input=ids[0], encoding_format="float")
    assert len(single.data) == 1 and by_ids.usage.prompt_tokens > single.usage.prompt_tokens


@pytest.mark.parametrize("body, status, param", [
    ({"model": "nope", "input": "x"}, 404, "model"),
    ({"model": None, "input": "x"}, 400, "model"),
    ({"input": "x"}, 400, "model"),
    ({"model": "M", "input": [[1, 2], [3, 99999999]]}, 400, "input[1]"),
    ({"model": "M", "input": [1, 2, 10**30]}, 400, "input"),
    ({"model": "M", "input": "x", "dimensions": 128}, 400, "dimensions"),
    ({"model": "M", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "M", "input": [True]}, 400, "input[0]"),
])
def test_errors(live, minilm_dir, body, status, param):
    if body.get("model") == "M":
        body = {**body, "model": minilm_dir.name}
    r = httpx.post(live.url + "/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    if param == "dimensions":
        assert "not supported" in r.json()["error"]["message"]


def test_over_long_input_with_overflow_error_names_the_input(minilm_dir):
    cfg = EmbeddingModelConfig(path=minilm_dir, overflow="error")
    engine = EmbeddingEngine.from_folder(minilm_dir, cfg)
    try:
        with LiveServer(create_app(Config(embedding=cfg), embedder=engine)) as server:
            r = httpx.post(server.url + "/v1/embeddings", json={"model": minilm_dir.name, "input": ["ok", "word " * 400]})
            assert r.status_code == 400 and r.json()["error"]["param"] == "input[1]"
            assert "256" in r.json()["error"]["message"]
    finally:
        engine.close()
