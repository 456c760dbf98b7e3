"""Load on the live server with the real SmolLM2: 32 concurrent streams give batch-invariant answers, and
clients that hang up mid-stream free their batch slots while the others finish."""

from __future__ import annotations

import re
import threading
import time

import httpx
import openai
import orjson
import pytest
from realizar_ort.server.app import create_app
from realizar_ort.server.live import LiveServer

from realizar_ort.config import Config, LlmModelConfig, ServerConfig, SessionConfig
from realizar_ort.generation.engine import ModelEngine

pytestmark = pytest.mark.slow

LLM = "smollm2-135m-instruct"
PROMPTS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Say hello in Spanish.",
           "What do bees make?", "Which planet is the largest?", "What is the boiling point of water?",
           "Write one word that rhymes with cat."]


@pytest.fixture(scope="module")
def engine(smollm2_dir):
    cfg = LlmModelConfig(path=smollm2_dir, max_batch_size=32, max_context=512, max_queued=64,
                         session=SessionConfig(intra_op_threads=2))
    engine = ModelEngine.from_config(cfg)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def live(engine, smollm2_dir):
    cfg = Config(llm=engine.config, server=ServerConfig(port=0))
    server = LiveServer(create_app(cfg, llm=engine))
    yield server
    server.stop()


def stream_text(client: openai.OpenAI, prompt: str, max_tokens: int) -> tuple[str, str]:
    stream = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": prompt}],
                                            temperature=0, max_tokens=max_tokens, stream=True)
    text, finish = [], None
    for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    return "".join(text), finish


def test_32_concurrent_streams_are_batch_invariant(live, engine):
    with openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=300) as client:
        alone = {p: client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": p}],
                                                   temperature=0, max_tokens=12).choices[0].message.content
                 for p in PROMPTS}
        results: dict[int, tuple[str, str]] = {}
        errors: list[BaseException] = []
        peak = [0]

        def run(i: int) -> None:
            try:
                results[i] = stream_text(client, PROMPTS[i % len(PROMPTS)], 12)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], engine.stats()["running"])
            time.sleep(0.01)
        assert not errors, errors
        assert len(results) == 32
        for i, (text, finish) in results.items():
            assert text == alone[PROMPTS[i % len(PROMPTS)]], (i, text)
            assert finish in ("stop", "length")
        assert peak[0] > 1  # requests really shared the batch


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_disconnecting_clients_free_their_slots(live, engine):
    body = {"model": LLM, "temperature": 0, "max_tokens": 80, "ignore_eos": True, "stream": True}
    started = threading.Barrier(33)
    hang_up = threading.Event()
    outcomes: dict[int, tuple[int, str | None]] = {}
    errors: list[BaseException] = []

    def run(i: int, leaves: bool) -> None:
        try:
            with httpx.Client(timeout=300) as c, c.stream("POST", live.url + "/v1/chat/completions", json={
                    **body, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}) as r:
                chunks, finish = 0, None
                lines = r.iter_lines()
                for line in lines:
                    if not line.startswith("data: {"):
                        continue
                    chunks += 1
                    choice = orjson.loads(line[6:])["choices"][0]
                    finish = choice["finish_reason"] or finish
                    if chunks == 2:
                        started.wait()
                        if leaves:
                            hang_up.wait()
                            return  # closing the response hangs up mid-stream
                outcomes[i] = (chunks, finish)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, i < 10)) for i in range(32)]
    for t in threads:
        t.start()
    started.wait()  # all 32 are streaming
    finished_before = engine.stats()["requests_finished"]
    hang_up.set()
    deadline = time.monotonic() + 120
    shrunk = False
    while time.monotonic() < deadline and any(t.is_alive() for t in threads[10:]):
        stats = engine.stats()
        if stats["running"] <= 22:
            shrunk = stats["requests_finished"] == finished_before  # no survivor had finished yet
            break
        time.sleep(0.005)
    metrics = httpx.get(live.url + "/metrics").text
    for t in threads:
        t.join()
    assert not errors, errors
    assert shrunk, "the batch did not shrink to 22 while the other 22 were still running"
    assert _metric(metrics, "realizar_running_batch_size") <= 22
    assert _metric(metrics, "realizar_cancelled_requests_total") >= 10
    assert sorted(outcomes) == list(range(10, 32))
    for chunks, finish in outcomes.values():
        assert finish == "length"
    deadline = time.monotonic() + 30
    while engine.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats()["running"] == 0
    assert httpx.get(live.url + "/health").status_code == 200


@pytest.fixture(scope="module")
def queued_hang_up(smollm2_dir):
    """One run of: a long stream holds the only slot; a second client gives up while queued behind it."""
    cfg = LlmModelConfig(path=smollm2_dir, max_batch_size=1, max_context=512, max_queued=4,
                         session=SessionConfig(intra_op_threads=2))
    engine = ModelEngine.from_config(cfg)
    seen: dict[str, object] = {}
    try:
        with LiveServer(create_app(Config(llm=cfg), llm=engine)) as server:
            long = {"model": LLM, "messages": [{"role": "user", "content": PROMPTS[0]}], "temperature": 0,
                    "max_tokens": 400, "ignore_eos": True, "stream": True}
            first_token = threading.Event()
            release = threading.Event()

            def hold() -> None:
                with httpx.Client(timeout=120) as c, c.stream("POST", server.url + "/v1/chat/completions",
                                                              json=long) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: {"):
                            first_token.set()
                            if release.wait(timeout=120):
                                return

            holder = threading.Thread(target=hold)
            holder.start()
            assert first_token.wait(timeout=120)
            seen["prompt_tokens_before"] = engine.stats()["prompt_tokens"]
            queued = {"model": LLM, "messages": [{"role": "user", "content": PROMPTS[1]}], "max_tokens": 5}
            with pytest.raises(httpx.ReadTimeout):  # gives up while queued behind the long stream
                httpx.post(server.url + "/v1/chat/completions", json=queued, timeout=httpx.Timeout(120, read=1.0))
            deadline = time.monotonic() + 60
            while "realizar_cancelled_requests_total 1.0" not in httpx.get(server.url + "/metrics").text:
                assert time.monotonic() < deadline, "the hang-up was not noticed"
                time.sleep(0.05)
            release.set()
            holder.join()
            deadline = time.monotonic() + 60
            while engine.stats()["running"] or engine.stats()["waiting"]:
                assert time.monotonic() < deadline, engine.stats()
                time.sleep(0.05)
            seen["prompt_tokens_after"] = engine.stats()["prompt_tokens"]
            deadline = time.monotonic() + 10
            while any(t.name == "realizar-stream" for t in threading.enumerate()) and time.monotonic() < deadline:
                time.sleep(0.1)
            seen["stream_threads"] = [t.name for t in threading.enumerate() if t.name == "realizar-stream"]
    finally:
        engine.close()
    return seen


def test_hanging_up_while_queued_cancels_before_prefill(queued_hang_up):
    assert queued_hang_up["prompt_tokens_after"] == queued_hang_up["prompt_tokens_before"]


def test_no_thread_is_left_waiting_on_a_request_cancelled_while_queued(queued_hang_up):
    assert queued_hang_up["stream_threads"] == []
