"""Routes, SSE framing, auth, limits and error mapping against small fake engines (no model needed).

The fakes implement just the engine surface the server uses; real-model behaviour is covered by
tests/integration/test_server*.py.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from realizar_ort.server.app import create_app
from starlette.testclient import TestClient

from realizar_ort.config import Config, ServerConfig
from realizar_ort.errors import ContextLengthError, QueueFullError
from realizar_ort.generation.results import GenerationDelta, Usage

LLM = "fake-llm"
EMB = "fake-emb"


class FakeEngine:
    """Echoes the last message word by word; magic words trigger the engine's error paths."""

    def __init__(self) -> None:
        self.manifest = SimpleNamespace(name=LLM, llm=SimpleNamespace(context_length=64, vocab_size=100, eos_token_ids=(0,)))
        self.active = 0
        self.closed_streams = 0
        self.lock = threading.Lock()

    def chat_stream(self, messages, params):
        words = messages[-1]["content"].split()
        if words[:1] == ["QUEUEFULL"]:
            raise QueueFullError("the queue is full (256 waiting)")
        if words[:1] == ["CONTEXT"]:
            raise ContextLengthError("prompt of 9000 tokens exceeds the context of 2048")
        return self._stream(words, params)

    def _stream(self, words, params):
        with self.lock:
            self.active += 1
        try:
            limit = params.max_tokens or 16
            out = words[:limit]
            for i, word in enumerate(out):
                if word == "BOOM" and i > 0:
                    raise RuntimeError("internal detail that must not leak")
                if word == "SLOW":
                    time.sleep(0.05)
                yield GenerationDelta(text=(" " if i else "") + word, token_ids=(i + 1,))
            reason = "length" if len(words) > limit else "stop"
            n = len(out)
            yield GenerationDelta(text="", token_ids=(), finish_reason=reason, usage=Usage(len(words), n, len(words) + n))
        finally:
            with self.lock:
                self.active -= 1
                self.closed_streams += 1

    def stats(self):
        return {"running_batch_size": self.active, "queue_depth": 0}


class FakeEmbedder:
    def __init__(self) -> None:
        self.manifest = SimpleNamespace(name=EMB, embedding=SimpleNamespace(embedding_dim=4))

    def embed_with_usage(self, texts):
        vectors = np.array([[len(t), 0.5, -1.25, 1 / 3] for t in texts], dtype=np.float32)
        return SimpleNamespace(vectors=vectors, token_counts=tuple(len(t.split()) + 2 for t in texts))

    def embed_token_ids(self, inputs):
        from realizar_ort.embeddings.engine import TokenIdOutOfRangeError

        for i, ids in enumerate(inputs):
            for j, t in enumerate(ids):
                if t >= 1000:
                    raise TokenIdOutOfRangeError(i, j, t, 1000)
        vectors = np.array([[len(ids), 0.0, 0.0, 1.0] for ids in inputs], dtype=np.float32)
        return SimpleNamespace(vectors=vectors, token_counts=tuple(len(ids) + 2 for ids in inputs))


@pytest.fixture()
def engine():
    return FakeEngine()


def make_client(engine, **server):
    config = Config(server=ServerConfig(**server))
    return TestClient(create_app(config, llm=engine, embedder=FakeEmbedder()), raise_server_exceptions=False)


@pytest.fixture()
def client(engine):
    with make_client(engine, max_body_bytes=64 * 1024) as c:
        yield c


def chat(content, **fields):
    return {"model": LLM, "messages": [{"role": "user", "content": content}], **fields}


def sse_events(text: str) -> list[bytes]:
    assert text.endswith("\n\n")
    return [e.encode() for e in text.split("\n\n")[:-1]]


def assert_error(response, status, param=None, code=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param and body["error"]["code"] == code
    assert "Traceback" not in response.text
    return body["error"]


# ---- chat -----------------------------------------------------------------------------------------------


def test_chat_completion_shape(client):
    r = client.post("/v1/chat/completions", json=chat("hello big world", max_tokens=2))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == LLM and body["id"].startswith("chatcmpl-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "hello big", "refusal": None},
                                "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                             "prompt_tokens_details": {"cached_tokens": 0}}


def test_stream_frames_fold_to_the_completion(client):
    r = client.post("/v1/chat/completions", json=chat("a b c", stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == b"data: [DONE]"
    chunks = [orjson.loads(e[len(b"data: "):]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # OpenAI's layout
    assert chunks[1]["choices"][0]["delta"] == {"content": "a"}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, None, "stop"]
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3,
                                                                   "total_tokens": 6,
                                                                   "prompt_tokens_details": {"cached_tokens": 0}}
    assert all(c["usage"] is None for c in chunks[:-1])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    folded = client.post("/v1/chat/completions", json=chat("a b c")).json()
    assert text == folded["choices"][0]["message"]["content"] == "a b c"


def test_error_after_stream_began_is_an_sse_error_then_done(client):
    r = client.post("/v1/chat/completions", json=chat("ok BOOM", stream=True))
    assert r.status_code == 200
    events = sse_events(r.text)
    assert events[-1] == b"data: [DONE]" and events[-2].startswith(b"event: error\ndata: ")
    error = orjson.loads(events[-2].split(b"data: ", 1)[1])["error"]
    assert error["type"] == "internal_error" and "internal detail" not in r.text


def test_engine_errors_before_the_stream_are_http_errors(client):
    r = client.post("/v1/chat/completions", json=chat("QUEUEFULL", stream=True))
    assert_error(r, 429, code="queue_full")
    assert r.headers["retry-after"] == "1"
    assert_error(client.post("/v1/chat/completions", json=chat("CONTEXT")), 400, "messages", "context_length_exceeded")
    assert_error(client.post("/v1/chat/completions", json=chat("x BOOM")), 500)


def test_unknown_model_is_404(client):
    e = assert_error(client.post("/v1/chat/completions", json={**chat("x"), "model": "gpt-9"}), 404, "model",
                     "model_not_found")
    assert "gpt-9" in e["message"]
    assert_error(client.post("/v1/chat/completions", json={**chat("x"), "model": EMB}), 404, "model", "model_not_found")
    assert_error(client.post("/v1/embeddings", json={"model": LLM, "input": "x"}), 404, "model", "model_not_found")


def test_bad_requests_are_400_naming_the_param(client):
    assert_error(client.post("/v1/chat/completions", content=b'{"model": '), 400)
    assert_error(client.post("/v1/chat/completions", content=b"\xff\xfe"), 400)
    assert_error(client.post("/v1/chat/completions", json=chat("x", max_tokens=-1)), 400, "max_tokens")
    assert_error(client.post("/v1/chat/completions", json=chat("x", n=3)), 400, "n")
    assert_error(client.post("/v1/chat/completions", json=chat("x", top_p=0.0)), 400, "top_p")  # engine's own check


def test_json_mode_without_grammar_is_a_clear_400(client):
    r = client.post("/v1/chat/completions", json=chat("x", response_format={"type": "json_object"}))
    assert_error(r, 400, "response_format")


def test_body_limit_is_413(engine):
    with make_client(engine, max_body_bytes=1000) as c:
        e = assert_error(c.post("/v1/chat/completions", json=chat("x" * 2000)), 413, code="request_too_large")
        assert "1000" in e["message"]
        assert c.post("/v1/chat/completions", json=chat("small")).status_code == 200


def test_api_keys(engine):
    with make_client(engine, api_keys=("k1", "k2")) as c:
        assert_error(c.post("/v1/chat/completions", json=chat("x")), 401, code="invalid_api_key")
        assert_error(c.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401, code="invalid_api_key")
        assert_error(c.get("/v1/models", headers={"Authorization": "Basic k1"}), 401, code="invalid_api_key")
        assert c.get("/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/health").status_code == 200  # probes stay open


# ---- other routes ---------------------------------------------------------------------------------------


def test_models_health_ready_metrics(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [LLM, EMB]
    assert all(m["object"] == "model" and m["owned_by"] for m in models["data"])
    assert client.get(f"/v1/models/{EMB}").json()["id"] == EMB
    assert_error(client.get("/v1/models/nope"), 404, "model", "model_not_found")
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.post("/v1/chat/completions", json=chat("one two"))
    text = client.get("/metrics").text
    assert 'realizar_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'realizar_generation_tokens_total{model="fake-llm"} 2.0' in text
    assert "realizar_running_batch_size 0.0" in text and "realizar_queue_depth 0.0" in text
    assert "realizar_time_to_first_token_seconds_count 1.0" in text


def test_unknown_route_and_method(client):
    assert_error(client.get("/v1/nothing"), 404, code="not_found")
    assert_error(client.get("/v1/chat/completions"), 405, code="method_not_allowed")


def test_embeddings_float_and_base64(client):
    import base64

    r = client.post("/v1/embeddings", json={"model": EMB, "input": ["ab", "abc d"]})
    body = r.json()
    assert body["object"] == "list" and body["model"] == EMB
    assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    floats = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert floats[1, 0] == 5.0 and floats[0, 3] == np.float32(1 / 3)
    b64 = client.post("/v1/embeddings", json={"model": EMB, "input": ["ab", "abc d"], "encoding_format": "base64"})
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64.json()["data"]])
    assert np.array_equal(decoded, floats)
    tokens = client.post("/v1/embeddings", json={"model": EMB, "input": [[1, 2, 3]]}).json()
    assert tokens["data"][0]["embedding"][0] == 3.0 and tokens["usage"]["prompt_tokens"] == 5


def test_embedding_errors(client):
    assert_error(client.post("/v1/embeddings", json={"model": EMB, "input": "x", "dimensions": 2}), 400, "dimensions")
    assert client.post("/v1/embeddings", json={"model": EMB, "input": "x", "dimensions": 4}).status_code == 200
    e = assert_error(client.post("/v1/embeddings", json={"model": EMB, "input": [[1], [5, 5000]]}), 400, "input[1]")
    assert "5000" in e["message"]
    assert_error(client.post("/v1/embeddings", json={"model": EMB, "input": [5000]}), 400, "input")
