"""SIGTERM to a real ``realizar-ort serve`` process (SmolLM2) while real streams run: it drains.

Short streams finish normally; long ones are stopped at the drain timeout with a finish reason, an error
event and ``[DONE]``; a long non-streaming request gets a 503 body; ``/ready`` and new requests get 503 at
once; the process exits with no traceback in its log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

LLM = "smollm2-135m-instruct"
DRAIN_S = 4.0


@pytest.fixture()
def server(smollm2_dir: Path, tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(f"""
[models.llm]
name = "{LLM}"
path = "{smollm2_dir}"
max_batch_size = 8
max_context = 1024
default_max_tokens = 32
[models.llm.session]
intra_op_threads = 2
[server]
port = 0
drain_timeout_s = {DRAIN_S}
log_level = "info"
""")
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "realizar_ort", "serve", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.1)
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def body(max_tokens: int, stream: bool) -> dict:
    return {"model": LLM, "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}],
            "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0, "stream": stream}


def test_sigterm_drains_in_flight_streams_and_exits_cleanly(server):
    proc, url, log = server
    results: dict[str, object] = {}
    first_chunks = threading.Barrier(6)

    def stream(name: str, max_tokens: int) -> None:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body(max_tokens, True), timeout=60) as r:
            lines = r.iter_lines()
            first = next(lines)
            first_chunks.wait()
            results[name] = [first] + [line for line in lines if line]

    def folded() -> None:
        first_chunks.wait()
        results["folded"] = httpx.post(url + "/v1/chat/completions", json=body(900, False), timeout=60)

    names = [("short0", 6), ("short1", 6), ("long0", 900), ("long1", 900)]
    threads = [threading.Thread(target=stream, args=n) for n in names] + [threading.Thread(target=folded)]
    for t in threads:
        t.start()
    first_chunks.wait(timeout=120)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.3)
    ready = httpx.get(url + "/ready", timeout=10)
    refused = httpx.post(url + "/v1/chat/completions", json=body(4, False), timeout=10)
    for t in threads:
        t.join(timeout=60)
    returncode = proc.wait(timeout=60)
    exited_after = time.monotonic() - signalled
    text = log.read_text()

    assert ready.status_code == 503 and "shutting down" in ready.text
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_shutting_down"
    for name in ("short0", "short1"):
        lines = results[name]
        assert lines[-1] == "data: [DONE]" and not any(line.startswith("event: error") for line in lines), lines[-3:]
        assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"
        assert sum(1 for line in lines if line.startswith("data: {")) >= 6  # every token arrived (+ role/finish chunks)
    for name in ("long0", "long1"):
        lines = results[name]
        assert lines[-1] == "data: [DONE]" and lines[-3] == "event: error", lines[-4:]
        assert json.loads(lines[-2][6:])["error"]["code"] == "server_shutting_down"
        assert json.loads(lines[-4][6:])["choices"][0]["finish_reason"] == "length"
        assert len(lines) < 800  # stopped, not run to the end
    folded = results["folded"]
    assert folded.status_code == 503 and folded.json()["error"]["code"] == "server_shutting_down"
    assert DRAIN_S - 0.5 < exited_after < DRAIN_S + 15
    assert returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert "Traceback" not in text and "CancelledError" not in text, text[-3000:]
    assert "drain timeout: stopping 3 request(s)" in text
