"""Compile time on real schemas: realizar-ort vs llguidance, schema by schema in one process.

CPU time (``process_time``: what a busy shared machine's preemption does not inflate) of compiling each
schema of a seeded MaskBench sample (``/work/shared/data/maskbench``, see its README) with both engines, back
to back; ours is split into the automaton (schema -> byte DFA) and the ``CompiledGrammar`` (vocabulary
tables, class shortcuts, mask cache). Both engines are warmed up first (numba JIT, tokenizer tables), so
one-off process costs are not counted; our compile cache is cleared before every schema.

    flock /work/bench.lock .venv/bin/python bench/compile_time.py --sample 300 --seed 0
    .venv/bin/python bench/compile_time.py --sample 300 --worst 10 --out /tmp/ct.jsonl   # per-schema lines

A schema counts as compiled when the engine returns a grammar (ours: no ``GrammarError``; llguidance: no
matcher error). Times include failed compiles (a refusal is a compile too). ``--deadline`` is ours' compile
budget (``deadline_s``); a hard SIGALRM stop at 60 s guards both.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from schema_coverage import DEFAULT_TOKENIZER, EOS, MODEL_VOCAB, maskbench_items  # noqa: E402


class _Stop(Exception):
    pass


def _stop(*_args):
    raise _Stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subset", help="only MaskBench subsets starting with this")
    ap.add_argument("--engines", default="ours,llguidance")
    ap.add_argument("--deadline", type=float, default=10.0, help="ours' compile budget, seconds")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    ap.add_argument("--out", type=Path, help="write one JSON line per schema (times in ms) here")
    ap.add_argument("--worst", type=int, default=0, help="list the N slowest schemas of ours")
    args = ap.parse_args()
    engines = args.engines.split(",")

    fns = {}
    if "ours" in engines:
        import realizar_ort
        from realizar_ort.grammar import compiler, matcher

        vocab = matcher.TokenVocabulary.from_tokenizer_file(args.tokenizer, MODEL_VOCAB, (EOS,))
        print("realizar_ort from", Path(realizar_ort.__file__).parent)

        def ours(schema, split):
            matcher._compile_cache.clear()
            try:
                if isinstance(schema, dict):
                    matcher.check_schema_shape(schema)
                t = time.process_time()
                automaton = compiler.compile_schema_automaton(schema, deadline_s=args.deadline)
                split.append(time.process_time() - t)
                matcher.CompiledGrammar(automaton, vocab)
                return True
            except matcher.GrammarError:
                return False
            except (RecursionError, UnicodeError, TypeError, AttributeError, KeyError, IndexError):
                return False

        for warm in ({"type": "object"}, {"type": "string", "pattern": "^[a-z]{2,4}$"}, {"enum": [1, "a"]}):
            ours(warm, [])
        fns["ours"] = ours
    if "llguidance" in engines:
        import llguidance

        tok = llguidance.LLTokenizer(str(args.tokenizer), eos_token=EOS)

        def llg(schema, _split):
            try:
                g = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
                return not llguidance.LLMatcher(tok, g).get_error()
            except Exception:  # noqa: BLE001 - the peer's refusals are counted, not raised
                return False

        llg({"type": "object"}, [])
        fns["llguidance"] = llg

    signal.signal(signal.SIGALRM, _stop)
    times = {e: [] for e in engines}
    auto = []
    ok = {e: 0 for e in engines}
    rows = []
    for sid, schema, *_ in maskbench_items(args.sample, args.seed, args.subset):
        row = {"id": sid}
        for e in engines:
            split: list[float] = []
            signal.setitimer(signal.ITIMER_REAL, 60)
            t = time.process_time()
            try:
                r = fns[e](schema, split)
            except _Stop:
                r = False
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            dt = time.process_time() - t
            times[e].append(dt)
            ok[e] += r
            row[e] = round(dt * 1e3, 3)
            row[e + "_ok"] = r
            if e == "ours":
                row["ours_automaton"] = round(split[0] * 1e3, 3) if split else None
                auto.append(split[0] if split else dt)
        rows.append(row)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} schemas (sample {args.sample}, seed {args.seed}), compile CPU ms (process_time)")
    print("| engine | compiled | p50 | p90 | p99 | max | total s |")
    print("|---|---|---|---|---|---|---|")
    cols = [(e, np.array(times[e]) * 1e3) for e in engines]
    if "ours" in engines:
        cols.insert(1, ("ours: automaton only", np.array(auto) * 1e3))
    for e, x in cols:
        done = f"{ok[e]}/{len(x)}" if e in ok else ""
        print(f"| {e} | {done} | {np.percentile(x, 50):.2f} | {np.percentile(x, 90):.1f} | "
              f"{np.percentile(x, 99):.1f} | {x.max():.0f} | {x.sum() / 1e3:.1f} |")
    if len(engines) == 2 and "ours" in engines:
        a, b = np.array(times["ours"]), np.array(times[engines[1 - engines.index("ours")]])
        print(f"ratio ours/peer: p50 {np.percentile(a, 50) / np.percentile(b, 50):.2f}x, "
              f"p99 {np.percentile(a, 99) / np.percentile(b, 99):.1f}x")
    if args.worst and "ours" in engines:
        for r in sorted(rows, key=lambda r: -r["ours"])[:args.worst]:
            print(f"  {r['id']}: ours {r['ours']:.1f} ms (automaton {r['ours_automaton']}), "
                  f"ok {r['ours_ok']}" + (f", llguidance {r['llguidance']:.1f} ms" if "llguidance" in r else ""))


if __name__ == "__main__":
    main()
