"""Fast-forward end to end: forced tokens appended without sampling, fed several per pass, outputs valid.

SmolLM2 (greedy, real answers) and the random-weight tiny Llama 3 on the real 128k vocabulary (fused graph,
and the Optimum concat graph that feeds forced tokens one per step). Validity is checked with fast-forward on
(the default); the forced runs are the tokenizer's own tokens for their text.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from realizar_ort.config import LlmModelConfig, SessionConfig
from realizar_ort.generation import scheduler as scheduler_module
from realizar_ort.generation.decoder_inplace import InPlaceDecoder
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.results import GenerationResult
from realizar_ort.generation.sampling import SamplingParams
from realizar_ort.grammar.forced import ForcedTokenizer
from realizar_ort.grammar.matcher import JsonGrammar, TokenVocabulary, compile_json_schema
from realizar_ort.manifest import load_manifest
from realizar_ort.onnx_session import create_session
from realizar_ort.tokenizer import Tokenizer
from realizar_ort.tools.generate import ToolGenerationResult, generate_with_tools

pytestmark = pytest.mark.slow

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 16},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "hobbies": {"type": "array", "items": {"enum": ["reading", "swimming", "chess"]}, "maxItems": 2},
    "address": {"type": "object", "properties": {"street_name": {"type": "string", "maxLength": 16},
                                                 "postal_code": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["street_name", "postal_code"], "additionalProperties": False}},
    "required": ["name", "age", "hobbies", "address"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "search_documents", "parameters": {"type": "object", "properties": {
        "query": {"type": "string", "maxLength": 12}, "limit": {"type": "integer", "minimum": 1, "maximum": 9}},
        "required": ["query"]}}},
]
ASK = [{"role": "user", "content": "Describe a person as JSON."}]


def _engine(folder: Path, **config) -> ModelEngine:
    return ModelEngine.from_folder(folder, LlmModelConfig(path=folder, max_batch_size=4, **config))


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    with _engine(smollm2_dir) as engine:
        yield engine


@pytest.fixture(scope="module")
def tiny(tiny_llama3_dir: Path):
    with _engine(tiny_llama3_dir) as engine:
        yield engine


def _grammar(engine: ModelEngine, schema: dict, healing: bool = False) -> tuple[JsonGrammar, ForcedTokenizer]:
    vocab = TokenVocabulary.from_tokenizer_file(engine.model_dir / "tokenizer.json", vocab_size=engine.vocab_size,
                                                stop_token_ids=tuple(sorted(engine.eos_token_ids)))
    forcer = ForcedTokenizer(vocab, engine.tokenizer, healing)
    return JsonGrammar(compile_json_schema(schema, vocab), forcer), forcer


def _run(engine: ModelEngine, params: SamplingParams) -> tuple[GenerationResult, list, dict]:
    before = engine.stats()
    with engine.chat_stream(ASK, params) as stream:
        deltas = list(stream)
    after = engine.stats()
    counts = {k: after[k] - before[k] for k in ("forced_tokens", "model_steps_saved", "decode_steps")}
    return GenerationResult.fold(iter(deltas)), deltas, counts


def test_smollm2_json_schema_forced_tokens_stream_at_once_and_save_steps(smollm2: ModelEngine) -> None:
    grammar, _ = _grammar(smollm2, PERSON)
    on, deltas, counts = _run(smollm2, SamplingParams(max_tokens=120, temperature=0, logit_processors=(grammar,)))
    jsonschema.validate(json.loads(on.text), PERSON)
    assert on.finish_reason == "stop"
    assert counts["forced_tokens"] >= 10  # keys, quotes, colons, braces
    assert counts["model_steps_saved"] >= 10
    assert counts["decode_steps"] < on.usage.completion_tokens - counts["forced_tokens"] + 2
    assert max(len(d.token_ids) for d in deltas) > 3  # a forced run streams in one delta
    grammar, _ = _grammar(smollm2, PERSON)
    off, _, counts = _run(smollm2, SamplingParams(max_tokens=120, temperature=0, logit_processors=(grammar,),
                                                   fast_forward=False))
    jsonschema.validate(json.loads(off.text), PERSON)
    assert counts["forced_tokens"] == 0 and counts["model_steps_saved"] == 0
    assert counts["decode_steps"] >= off.usage.completion_tokens - 1


def test_forced_runs_are_what_the_tokenizer_writes(smollm2: ModelEngine) -> None:
    grammar, forcer = _grammar(smollm2, PERSON)
    _, deltas, _ = _run(smollm2, SamplingParams(max_tokens=120, temperature=0, logit_processors=(grammar,)))
    runs = [list(d.token_ids) for d in deltas if len(d.token_ids) > 1]  # a sampled token comes alone
    assert len(runs) >= 3
    for run in runs:
        spelled = forcer.spell(run)
        assert spelled is not None
        assert smollm2.tokenizer.encode(spelled.decode("utf-8")) == run


def test_batched_rows_feed_forced_tokens_next_to_sampled_ones(tiny: ModelEngine) -> None:
    """Four streams at once on the tiny Llama 3: some rows feed forced runs (in passes of their own or one
    per step, as the measured costs say) while others sample; every answer validates."""
    results: list = [None] * 4
    before = tiny.stats()

    def worker(i: int) -> None:
        grammar, _ = _grammar(tiny, PERSON)
        params = SamplingParams(max_tokens=160, temperature=1.0, seed=i, logit_processors=(grammar,))
        results[i] = tiny.chat(ASK, params)

    _in_threads(worker, 4)
    after = tiny.stats()
    for r in results:
        assert r.finish_reason == "stop", r.text
        jsonschema.validate(json.loads(r.text), PERSON)
    assert after["forced_tokens"] - before["forced_tokens"] >= 40
    # whether a run gets a pass of its own (steps saved) depends on measured costs: see the test below


def _in_threads(worker, n: int) -> None:
    """Run ``worker(0..n-1)`` on n threads at once and wait for all of them."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


MIXED_ASKS = ["Describe a person as JSON.", "A person who likes chess, as JSON.", "Invent someone.",
              "Give me a JSON person living on a long street with a very long name, please."]


def _greedy_person(engine: ModelEngine, i: int) -> list[int]:
    grammar, _ = _grammar(engine, PERSON)
    params = SamplingParams(max_tokens=160, temperature=0, logit_processors=(grammar,))
    result = engine.chat([{"role": "user", "content": MIXED_ASKS[i]}], params)
    assert result.finish_reason == "stop", result.text
    jsonschema.validate(json.loads(result.text), PERSON)
    return result.token_ids


@pytest.mark.parametrize("own_passes", [True, False])
def test_rows_feeding_forced_runs_in_a_batch_give_each_row_its_tokens_alone(
        tiny: ModelEngine, monkeypatch: pytest.MonkeyPatch, own_passes: bool) -> None:
    """Greedy answers of four streams at once, where rows feed forced runs in passes of their own (the cost
    model told that every such pass pays) or one token per step (told that none does) next to rows that
    sample, are token for token what each request gives alone (where the whole run and the sampled token go
    in one pass)."""
    alone = [_greedy_person(tiny, i) for i in range(4)]
    worth = 1.0 if own_passes else 0.0
    monkeypatch.setattr(scheduler_module._PassCosts, "row_step", lambda self, b, queued: worth)
    results: list = [None] * 4
    before = tiny.stats()

    def worker(i: int) -> None:
        results[i] = _greedy_person(tiny, i)

    _in_threads(worker, 4)
    after = tiny.stats()
    assert (after["forced_passes"] > before["forced_passes"]) == own_passes  # rows fed runs in passes of their own
    assert results == alone


@pytest.mark.parametrize("healing", [False, True], ids=["model-led", "healing"])
@pytest.mark.parametrize("model", ["smollm2", "tiny"])
def test_required_tool_calls_fast_forward_and_validate(model: str, healing: bool, request: pytest.FixtureRequest,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call validates; the streamed calls (token healing, `[models.llm] fast_forward_healing`,
    replaces a sampled token inside a call: the stream's reader must not spell it twice) are the same as the
    folded ones. Healing happens only where it is switched on."""
    engine: ModelEngine = request.getfixturevalue(model)
    monkeypatch.setattr(engine, "config", dataclasses.replace(engine.config, fast_forward_healing=healing))
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    healed = engine.stats()["healed_tokens"]
    for seed in range(4):
        before = engine.stats()
        params = SamplingParams(max_tokens=80, temperature=1.0, seed=seed)
        result = generate_with_tools(engine, [{"role": "user", "content": "Weather in Paris?"}], TOOLS, "required",
                                     params=params)
        forced = engine.stats()["forced_tokens"] - before["forced_tokens"]
        assert result.finish_reason == "tool_calls", result
        (call,) = result.tool_calls
        jsonschema.validate(call.arguments, schemas[call.name])
        assert forced >= 4, forced  # '{"name": "' and the rest of the call's fixed text
        assert result.usage.completion_tokens == len(result.token_ids)
        with engine.generate_with_tools_stream([{"role": "user", "content": "Weather in Paris?"}], TOOLS, "required",
                                               params=params) as stream:
            streamed = ToolGenerationResult.fold(stream)
        assert [(c.name, c.arguments_json) for c in streamed.tool_calls] == [(call.name, call.arguments_json)]
        assert streamed.token_ids == result.token_ids
    assert (engine.stats()["healed_tokens"] > healed) == healing


def test_fast_forward_off_in_the_config(tiny_llama3_dir: Path) -> None:
    with _engine(tiny_llama3_dir, fast_forward=False) as engine:
        grammar, _ = _grammar(engine, PERSON)
        result = engine.chat(ASK, SamplingParams(max_tokens=160, temperature=0, logit_processors=(grammar,)))
        jsonschema.validate(json.loads(result.text), PERSON)
        assert engine.stats()["forced_tokens"] == 0


def test_concat_graph_feeds_forced_tokens_one_per_step(tiny_llama3_optimum_dir: Path) -> None:
    with _engine(tiny_llama3_optimum_dir) as engine:
        grammar, _ = _grammar(engine, PERSON)
        result = engine.chat(ASK, SamplingParams(max_tokens=160, temperature=0, logit_processors=(grammar,)))
        jsonschema.validate(json.loads(result.text), PERSON)
        stats = engine.stats()
        assert stats["forced_tokens"] >= 10 and stats["model_steps_saved"] == 0


def test_max_tokens_cuts_a_forced_run(tiny: ModelEngine) -> None:
    grammar, _ = _grammar(tiny, PERSON)
    result = tiny.chat(ASK, SamplingParams(max_tokens=2, temperature=0, logit_processors=(grammar,)))
    assert result.finish_reason == "length" and result.usage.completion_tokens == 2


class _RecordingGrammar(JsonGrammar):
    """A JsonGrammar that records every forced run the scheduler takes: (the generated ids it followed, how
    many of them it replaced, the run)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.runs: list[tuple[list[int], int, list[int]]] = []

    def forced_tokens(self, generated_ids, limit):
        out = super().forced_tokens(generated_ids, limit)
        if out:
            self.runs.append((list(generated_ids), 0, list(out)))
        return out

    def healed_forced_tokens(self, generated_ids, limit):
        drop, out = super().healed_forced_tokens(generated_ids, limit)
        if out:
            self.runs.append((list(generated_ids), drop, list(out)))
        return drop, out


def _recorded_answers(engine: ModelEngine, temperature: float) -> list[tuple[GenerationResult, list, _RecordingGrammar]]:
    """Four json answers at once (MIXED_ASKS) with token healing, each with the deltas it streamed and its
    recording grammar."""
    base, forcer = _grammar(engine, PERSON, healing=True)
    out: list = [None] * 4

    def worker(i: int) -> None:
        grammar = _RecordingGrammar(base.grammar, forcer)
        params = SamplingParams(max_tokens=100, temperature=temperature, seed=i, logit_processors=(grammar,))
        with engine.chat_stream([{"role": "user", "content": MIXED_ASKS[i]}], params) as stream:
            deltas = list(stream)
        out[i] = (GenerationResult.fold(iter(deltas)), deltas, grammar)

    _in_threads(worker, 4)
    return out


@pytest.mark.parametrize(("model", "temperature"), [("smollm2", 0.0), ("tiny", 1.0)])
def test_sampled_tokens_before_forced_runs_are_healed(model: str, temperature: float,
                                                      request: pytest.FixtureRequest) -> None:
    """Around every forced run after a sampled token, the whole answer holds what the tokenizer writes for
    their bytes: the sampled token and the run when it stays (`tags` + `":`), or the run alone when the run
    replaced it (`t` + forced `ags` becomes `tags`; token healing at the run's start). Without healing the
    answers hold `t` `ags`. The answer's ids still spell its streamed text, usage counts them (a replaced
    token is not counted), finished answers validate, and healing happened. (A sampled token that ends a
    character begun in an earlier token has no text of its own: it is never replaced, and not checked.)"""
    engine: ModelEngine = request.getfixturevalue(model)
    vocab = _grammar(engine, PERSON)[1].vocab
    tok = engine.tokenizer
    before = engine.stats().get("healed_tokens", 0)
    boundaries = 0
    for result, deltas, grammar in _recorded_answers(engine, temperature):
        for generated, drop, run in grammar.runs:
            if not generated:
                continue  # forced at the very start: no sampled token before it
            ids = [t for t in run if t not in engine.eos_token_ids]
            start = len(generated) - drop
            assert result.token_ids[start : start + len(run)] == run  # where it sits in the whole answer
            around = ids if drop else [generated[-1], *ids]
            spelled = b"".join(vocab.token_bytes(t) for t in around)
            try:
                text = spelled.decode("utf-8")
            except UnicodeDecodeError:  # the sampled token ends a character begun before it: not text alone
                continue
            assert tok.encode(text) == around, [vocab.token_bytes(t) for t in around]
            boundaries += 1
        assert "".join(d.text for d in deltas) == result.text == tok.decode(result.token_ids)
        assert result.usage.completion_tokens == len(result.token_ids)
        if result.finish_reason == "stop":
            jsonschema.validate(json.loads(result.text), PERSON)
    assert boundaries >= 8
    assert engine.stats()["healed_tokens"] > before


def test_a_healed_answer_is_stored_in_the_prefix_cache_as_fed(tiny: ModelEngine, tiny_llama3_dir: Path) -> None:
    """The sampled token a forced run replaced was never fed: the KV stored when the answer retires is that
    of its final ids, so a prompt that repeats the conversation loads it and continues exactly as an engine
    without the cache."""
    grammar, _ = _grammar(tiny, PERSON, healing=True)
    before = tiny.stats()["healed_tokens"]
    prompt = tiny.encode_prompt(tiny.render_chat(ASK))
    answer = tiny.generate(prompt, SamplingParams(max_tokens=160, temperature=0, logit_processors=(grammar,)))
    assert tiny.stats()["healed_tokens"] > before
    again = [*prompt, *answer.token_ids, *tiny.tokenizer.encode(" more")]
    greedy = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    cached = tiny.generate(again, greedy)
    assert cached.usage.cached_tokens >= len(prompt) + 16
    with _engine(tiny_llama3_dir, prefix_cache_mb=0) as plain:
        assert cached.token_ids == plain.generate(again, greedy).token_ids


def test_a_forced_run_fed_in_one_pass_gives_the_logits_of_feeding_it_token_by_token(smollm2_dir: Path) -> None:
    """The forced-run pass (`extend` on a running row's slot, next to another row) computes what feeding the
    same tokens one decode step at a time computes, to float tolerance, at the run's end and at the next
    step; the other row's next step is what it gets alone. (SmolLM2, a real json prompt and canonical run.)"""
    spec = load_manifest(smollm2_dir).llm
    session = create_session(smollm2_dir / "model.onnx", SessionConfig(intra_op_threads=2))
    tokenizer = Tokenizer.from_file(smollm2_dir / "tokenizer.json")
    other = tokenizer.encode("Tell me about the sea.")
    prompt = tokenizer.encode("Create a task for fixing the login page, as JSON.")
    run = tokenizer.encode('{"id":"TAL-1234","title":"')
    after, other_next = tokenizer.encode("Fix")[0], tokenizer.encode(" The")[0]

    batch = InPlaceDecoder(session, spec, 2, 128)
    batch.prefill(other)
    batch.admit()
    batch.prefill(prompt)
    batch.admit()
    fed = batch.extend(1, run, len(prompt)).copy()  # row 1's run in a pass of its own
    both = batch.decode_step(np.array([other_next, after]), np.array([len(other), len(prompt) + len(run)])).copy()

    steps = InPlaceDecoder(session, spec, 1, 128)
    steps.prefill(prompt)
    steps.admit()
    for i, token in enumerate(run):
        one = steps.decode_step(np.array([token]), np.array([len(prompt) + i]))[0].copy()
    next_one = steps.decode_step(np.array([after]), np.array([len(prompt) + len(run)]))[0]
    alone = InPlaceDecoder(session, spec, 1, 128)
    alone.prefill(other)
    alone.admit()
    other_alone = alone.decode_step(np.array([other_next]), np.array([len(other)]))[0]

    np.testing.assert_allclose(fed, one, atol=1e-3, rtol=0)
    assert np.argmax(fed) == np.argmax(one)
    np.testing.assert_allclose(both[1], next_one, atol=1e-3, rtol=0)
    np.testing.assert_allclose(both[0], other_alone, atol=1e-3, rtol=0)
    assert np.isfinite(fed).all() and np.isfinite(both).all()


TICKET = {"type": "object", "properties": {  # bench/grammar.py's nested schema (an unbounded `subtasks` array)
    "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
    "title": {"type": "string", "minLength": 3, "maxLength": 60},
    "status": {"enum": ["open", "closed", "blocked"]},
    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 5},
    "owner": {"type": "object", "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
              "required": ["name"], "additionalProperties": False},
    "subtasks": {"type": "array", "items": {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40}, "done": {"type": "boolean"}},
        "required": ["title", "done"], "additionalProperties": False}},
    "due": {"type": ["string", "null"]}},
    "required": ["id", "title", "status", "subtasks"], "additionalProperties": False}
TICKET_ASKS = ["Create a task for fixing the login page.", "Make a ticket about slow search results.",
               "Track the migration to the new database."]


def _ticket(engine: ModelEngine, forcer: ForcedTokenizer, ask: str, ff: bool) -> GenerationResult:
    grammar = JsonGrammar(compile_json_schema(TICKET, forcer.vocab), forcer)
    params = SamplingParams(max_tokens=120, temperature=0, fast_forward=ff, logit_processors=(grammar,))
    return engine.chat([{"role": "user", "content": ask}], params)


def test_greedy_smollm2_json_answers_finish_with_fast_forward_as_without(smollm2: ModelEngine) -> None:
    """The model picks a forced run's first token after a sampled one (the default): greedy SmolLM2 answers
    to the nested ticket schema finish and validate, as they do with fast-forward off. With the tokenizer's
    merges forced there (token healing, the default before), these answers opened `subtasks` items and
    repeated them until max_tokens (1 of 16 such answers finished; bench/fast_forward_quality.py). Forced
    runs still save steps."""
    _, forcer = _grammar(smollm2, TICKET)
    assert not forcer.healing  # (the default)
    for ask in TICKET_ASKS:
        off = _ticket(smollm2, forcer, ask, ff=False)
        assert off.finish_reason == "stop", off.text
        before = smollm2.stats()
        on = _ticket(smollm2, forcer, ask, ff=True)
        after = smollm2.stats()
        assert on.finish_reason == "stop", on.text
        jsonschema.validate(json.loads(on.text), TICKET)
        assert after["forced_tokens"] - before["forced_tokens"] >= 5
        assert after["healed_tokens"] == before["healed_tokens"]
