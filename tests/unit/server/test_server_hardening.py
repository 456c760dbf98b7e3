"""Hardening on fake engines (no model): metrics that count what they say, shutdown drain, body timeout,
the request-field policy and ``system_fingerprint``. Real-process shutdown: tests/integration/test_server_shutdown.py.
"""

from __future__ import annotations

import re
import time

import orjson
import pytest
from test_server_protocol_routes import FakeEmbedder, FakeEngine, chat, make_client, sse_events


@pytest.fixture()
def engine():
    return FakeEngine()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} not in the scrape"
    return float(match.group(1))


# ---- metrics ----------------------------------------------------------------------------------------------


def test_streams_read_to_the_end_are_not_counted_as_cancelled(engine):
    with make_client(engine) as c:
        for _ in range(3):
            r = c.post("/v1/chat/completions", json=chat("a b c", stream=True))
            assert sse_events(r.text)[-1] == b"data: [DONE]"
        c.post("/v1/chat/completions", json=chat("a b c"))
        assert metric(c.get("/metrics").text, "realizar_cancelled_requests_total") == 0.0


def test_every_metric_counts_exactly_what_it_says(engine):
    with make_client(engine) as c:
        assert c.post("/v1/chat/completions", json=chat("one two three", max_tokens=2)).status_code == 200
        assert c.post("/v1/chat/completions", json=chat("a b c d", stream=True)).status_code == 200
        assert c.post("/v1/chat/completions", json=chat("x", max_tokens=-1)).status_code == 400
        assert c.post("/v1/embeddings", json={"model": "fake-emb", "input": ["ab", "c d e"]}).status_code == 200
        text = c.get("/metrics").text
    assert metric(text, 'realizar_requests_total{route="/v1/chat/completions",status="200"}') == 2
    assert metric(text, 'realizar_requests_total{route="/v1/chat/completions",status="400"}') == 1
    assert metric(text, 'realizar_requests_total{route="/v1/embeddings",status="200"}') == 1
    assert metric(text, 'realizar_request_duration_seconds_count{route="/v1/chat/completions"}') == 3
    # the fake's prompt is one token per word; MiniLM-free embeddings count words + 2 per input
    assert metric(text, 'realizar_prompt_tokens_total{model="fake-llm"}') == 3 + 4
    assert metric(text, 'realizar_prompt_tokens_total{model="fake-emb"}') == 3 + 5
    assert metric(text, 'realizar_generation_tokens_total{model="fake-llm"}') == 2 + 4
    assert metric(text, "realizar_time_to_first_token_seconds_count") == 2  # one per request with tokens
    assert metric(text, "realizar_inter_token_latency_seconds_count") == (2 - 1) + (4 - 1)
    assert metric(text, "realizar_cancelled_requests_total") == 0
    assert metric(text, "realizar_running_batch_size") == 0 and metric(text, "realizar_queue_depth") == 0


def test_a_hang_up_mid_stream_counts_one_cancellation_and_the_gauges_follow(engine):
    import httpx
    from realizar_ort.server.app import create_app
    from realizar_ort.server.live import LiveServer

    from realizar_ort.config import Config, ServerConfig

    with LiveServer(create_app(Config(server=ServerConfig(port=0)), llm=engine, embedder=FakeEmbedder())) as live:
        words = " ".join(["SLOW"] * 60)
        with httpx.stream("POST", live.url + "/v1/chat/completions", json=chat(words, stream=True, max_tokens=60),
                          timeout=30) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            running = metric(httpx.get(live.url + "/metrics").text, "realizar_running_batch_size")
        assert running == 1
        for _ in range(200):  # the server notices the hang-up at its next send
            text = httpx.get(live.url + "/metrics").text
            if metric(text, "realizar_cancelled_requests_total") and not metric(text, "realizar_running_batch_size"):
                break
            import time

            time.sleep(0.05)
        assert metric(text, "realizar_cancelled_requests_total") == 1
        assert metric(text, "realizar_running_batch_size") == 0


# ---- system_fingerprint -----------------------------------------------------------------------------------


def test_system_fingerprint_is_a_stable_string_for_model_and_config(engine, tmp_path):
    import dataclasses

    from realizar_ort.server.state import system_fingerprint

    from realizar_ort.config import LlmModelConfig

    fingerprints = []
    for _ in range(2):  # two app instances (a restart, or two replicas) of the same model and config
        with make_client(engine) as c:
            full = c.post("/v1/chat/completions", json=chat("a b")).json()
            chunks = [orjson.loads(e[6:]) for e in sse_events(c.post("/v1/chat/completions",
                                                                     json=chat("a b", stream=True)).text)[:-1]]
            fingerprints.append(full["system_fingerprint"])
            assert {c["system_fingerprint"] for c in chunks} == {full["system_fingerprint"]}
    assert isinstance(fingerprints[0], str) and re.fullmatch(r"fp_[0-9a-f]{12}", fingerprints[0])
    assert fingerprints[0] == fingerprints[1]
    config = LlmModelConfig(path=tmp_path / "a")
    same = system_fingerprint(engine.manifest, dataclasses.replace(config, path=tmp_path / "b"))
    assert system_fingerprint(engine.manifest, config) == same  # where the folder lives does not matter
    assert system_fingerprint(engine.manifest, dataclasses.replace(config, max_context=4096)) != same
    other = type(engine.manifest)(**{**vars(engine.manifest), "name": "another"})
    assert system_fingerprint(other, config) != same


# ---- graceful shutdown (a real uvicorn in a thread; the real-signal test is in tests/integration) ----------


def test_drain_refuses_new_work_lets_short_requests_finish_and_stops_the_rest_cleanly(engine):
    import threading

    import httpx
    from realizar_ort.server.app import create_app
    from realizar_ort.server.live import LiveServer

    from realizar_ort.config import Config, ServerConfig

    app = create_app(Config(server=ServerConfig(port=0, drain_timeout_s=1.5)), llm=engine, embedder=FakeEmbedder())
    live = LiveServer(app)
    url = live.url + "/v1/chat/completions"
    results: dict[str, object] = {}
    started = threading.Barrier(4)

    def stream(name: str, words: int) -> None:
        with httpx.stream("POST", url, json=chat(" ".join(["SLOW"] * words), stream=True, max_tokens=words),
                          timeout=30) as r:
            lines = r.iter_lines()
            first = next(lines)
            started.wait()
            results[name] = [first] + [line for line in lines if line]

    def folded() -> None:
        with httpx.Client(timeout=30) as c:
            started.wait()
            results["folded"] = c.post(url, json=chat(" ".join(["SLOW"] * 60), max_tokens=60))

    threads = [threading.Thread(target=stream, args=("short", 10)), threading.Thread(target=stream, args=("long", 60)),
               threading.Thread(target=folded)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.1)  # the non-streaming request is in flight too
    live.drain()
    time.sleep(0.1)
    try:
        ready = httpx.get(live.url + "/ready")
        assert ready.status_code == 503 and "shutting down" in ready.text
        refused = httpx.post(url, json=chat("new"))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_shutting_down"
        assert refused.headers["retry-after"] == "1"
        assert httpx.get(live.url + "/health").status_code == 200
    finally:
        for t in threads:
            t.join(timeout=30)
        live.thread.join(timeout=30)
    assert not live.thread.is_alive(), "the server did not exit after draining"
    short = results["short"]
    assert short[-1] == "data: [DONE]" and not any(line.startswith("event: error") for line in short)
    assert orjson.loads(short[-2][6:])["choices"][0]["finish_reason"] == "stop"
    long = results["long"]
    assert long[-1] == "data: [DONE]" and long[-3] == "event: error", long[-4:]
    assert orjson.loads(long[-2][6:])["error"]["code"] == "server_shutting_down"
    assert orjson.loads(long[-4][6:])["choices"][0]["finish_reason"] == "length"
    assert 10 < len(long) < 60  # it was cut short, not run to the end
    body = results["folded"]
    assert body.status_code == 503 and body.json()["error"]["code"] == "server_shutting_down"
    assert engine.active == 0


def test_shutdown_error_mid_stream_of_any_kind_carries_a_finish_reason(engine):
    with make_client(engine) as c:
        events = sse_events(c.post("/v1/chat/completions", json=chat("ok BOOM", stream=True)).text)
    assert events[-1] == b"data: [DONE]" and events[-2].startswith(b"event: error")
    assert orjson.loads(events[-3][6:])["choices"][0]["finish_reason"] == "length"


# ---- body-read timeout ------------------------------------------------------------------------------------


def test_a_trickled_body_gets_a_408_and_its_connection_is_closed(engine):
    import socket

    import httpx
    from realizar_ort.server.app import create_app
    from realizar_ort.server.live import LiveServer

    from realizar_ort.config import Config, ServerConfig

    app = create_app(Config(server=ServerConfig(port=0, body_timeout_s=1.0)), llm=engine, embedder=FakeEmbedder())
    with LiveServer(app) as live:
        socks = []
        for path in ("/v1/chat/completions", "/v1/embeddings"):
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Content-Length: 100\r\n\r\n{\"mo".encode())
            socks.append(sock)
        started = time.monotonic()
        for sock in socks:
            received = b""
            while True:  # trickle a byte every 0.2 s until the server answers and closes
                try:
                    sock.sendall(b" ")
                except OSError:
                    pass
                sock.settimeout(0.2)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    assert time.monotonic() - started < 8, "no answer to a trickled body"
                    continue
                except OSError:  # reset after the close
                    break
                if not chunk:
                    break  # the server closed the connection
                received += chunk
            sock.close()
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), received[:200]
            assert orjson.loads(body)["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 8
        # the server is still fine, and a normal body is unaffected
        assert httpx.post(live.url + "/v1/chat/completions", json=chat("a b")).status_code == 200
        text = httpx.get(live.url + "/metrics").text
        assert metric(text, 'realizar_requests_total{route="/v1/chat/completions",status="408"}') == 1
