"""``POST /v1/completions`` through the official ``openai`` client against the live SmolLM2 server (strings,
lists, token ids, stream, echo, legacy logprobs, stop, seed), and the router gauges on ``/metrics`` moving
while requests run."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from realizar_ort.generation.sampling import SamplingParams

pytestmark = pytest.mark.slow

LLM = "smollm2-135m-instruct"
PROMPT = "The capital of France is"


def test_completion_equals_the_engine(client, engines):
    r = client.completions.create(model=LLM, prompt=PROMPT, max_tokens=8, temperature=0)
    expected = engines[0].generate(PROMPT, SamplingParams(max_tokens=8, temperature=0))
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == LLM
    (choice,) = r.choices
    assert choice.text == expected.text and choice.index == 0 and choice.finish_reason == expected.finish_reason
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (expected.usage.prompt_tokens,
                                                                  expected.usage.completion_tokens)


def test_default_max_tokens_is_16_and_prompts_in_every_shape(client, engines):
    r = client.completions.create(model=LLM, prompt=PROMPT, temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"
    ids = engines[0].encode_prompt(PROMPT)
    by_text = client.completions.create(model=LLM, prompt=PROMPT, max_tokens=6, temperature=0)
    by_ids = client.completions.create(model=LLM, prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    several = client.completions.create(model=LLM, prompt=[PROMPT, "One, two, three,", ids], max_tokens=6,
                                        temperature=0)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.choices[0].text == several.choices[2].text == by_text.choices[0].text
    single = client.completions.create(model=LLM, prompt="One, two, three,", max_tokens=6, temperature=0)
    assert several.choices[1].text == single.choices[0].text
    assert several.usage.completion_tokens == sum(
        x.usage.completion_tokens for x in (by_text, single, by_ids))


def test_stream_folds_to_the_non_streaming_answer(client):
    prompts = [PROMPT, "One, two, three,"]
    full = client.completions.create(model=LLM, prompt=prompts, max_tokens=10, temperature=0)
    stream = client.completions.create(model=LLM, prompt=prompts, max_tokens=10, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    texts, finish, usage = {0: "", 1: ""}, {}, None
    for chunk in stream:
        assert chunk.object == "text_completion"
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert [texts[0], texts[1]] == [c.text for c in full.choices]
    assert [finish[0], finish[1]] == [c.finish_reason for c in full.choices]
    assert usage.completion_tokens == full.usage.completion_tokens


def test_echo_stop_seed_and_legacy_logprobs(client):
    base = client.completions.create(model=LLM, prompt=PROMPT, max_tokens=8, temperature=0)
    echoed = client.completions.create(model=LLM, prompt=PROMPT, max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == PROMPT + base.choices[0].text
    word = base.choices[0].text.split()[1]
    stopped = client.completions.create(model=LLM, prompt=PROMPT, max_tokens=8, temperature=0, stop=[word])
    assert word not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    a, b = (client.completions.create(model=LLM, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=11)
            for _ in range(2))
    assert a.choices[0].text == b.choices[0].text
    r = client.completions.create(model=LLM, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(5)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 2 and logprob <= 0 and max(top.values()) == pytest.approx(logprob)  # greedy: the top


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"), ({"best_of": 3}, "best_of"), ({"suffix": "x"}, "suffix"), ({"logprobs": 6}, "logprobs"),
    ({"echo": True, "logprobs": 1}, "echo"), ({"prompt": []}, "prompt"), ({"prompt": [[]]}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"), ({"max_tokens": 0}, "max_tokens"), ({"stop": [""]}, "stop"),
    ({"unknown": 1}, "unknown"), ({"prompt": [10**9]}, "prompt"),
])
def test_bad_requests_are_400s_naming_the_field(live, body, param):
    r = httpx.post(live.url + "/v1/completions", json={"model": LLM, "prompt": PROMPT, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def _gauges(live) -> dict[str, float]:
    text = httpx.get(live.url + "/metrics").text
    found = re.findall(r"^(realizar:\w+) (\S+)$", text, flags=re.M)
    return {name: float(value) for name, value in found}


def test_router_gauges_move_under_load(live):
    idle = _gauges(live)
    assert set(idle) == {"realizar:num_requests_waiting", "realizar:num_requests_running",
                         "realizar:kv_cache_usage_perc"}
    assert idle["realizar:num_requests_running"] == 0 and idle["realizar:kv_cache_usage_perc"] == 0

    def work() -> None:
        httpx.post(live.url + "/v1/completions", timeout=120, json={
            "model": LLM, "prompt": PROMPT, "max_tokens": 30, "temperature": 0, "ignore_eos": True})

    threads = [threading.Thread(target=work) for _ in range(10)]  # 10 > max_batch_size 8: two must wait
    for t in threads:
        t.start()
    peak: dict[str, float] = dict.fromkeys(idle, 0.0)
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        for name, value in _gauges(live).items():
            peak[name] = max(peak[name], value)
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert peak["realizar:num_requests_running"] == 8
    assert peak["realizar:num_requests_waiting"] >= 1
    assert peak["realizar:kv_cache_usage_perc"] == 1.0
    assert _gauges(live)["realizar:num_requests_running"] == 0
