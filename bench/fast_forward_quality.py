"""Fast-forward on vs off: do json_schema answers still finish? (SmolLM2 by default; not a speed bench.)

    flock /work/bench.lock .venv/bin/python bench/fast_forward_quality.py [--model smollm2-135m-instruct]
        [--temperatures 0,0.7] [--max-tokens 120]

16 prompts for the nested schema of ``bench/grammar.py`` (the 8 of ``bench/fast_forward.py`` and 8 more),
8 at a time, each with fast-forward off, on (the model picks a forced run's first token after a sampled
token: the default) and on with token healing (``ForcedTokenizer(healing=True)``), greedy and sampled (a
fixed seed per prompt). Per setting:
answers finished (not cut at max_tokens), valid among the finished ones, answers cut inside ``subtasks``
items (the unbounded array a small model repeats), answers that open ``subtasks`` items at all,
answers whose tokens differ from the tokenizer's own tokens for their text (with it off, the model spells
keys under the mask in pieces the tokenizer never writes; with it on, the free parts the model samples
may still be spelled so), and, with it on, the forced runs after a sampled token: how many, how many
replaced that token (token healing), and at how many the sampled token and the run are not the
tokenizer's own tokens for their bytes (a sampled token ending a character begun before it: not counted).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
from pathlib import Path

import jsonschema

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from fast_forward import JSON_PROMPTS  # noqa: E402
from grammar import NESTED  # noqa: E402

from realizar_ort.config import LlmModelConfig  # noqa: E402
from realizar_ort.generation.engine import ModelEngine  # noqa: E402
from realizar_ort.generation.sampling import SamplingParams  # noqa: E402
from realizar_ort.grammar.forced import ForcedTokenizer  # noqa: E402
from realizar_ort.grammar.matcher import JsonGrammar, TokenVocabulary, compile_json_schema  # noqa: E402

MORE_PROMPTS = ["Open a ticket for the broken password reset email.", "Create a task: migrate CI to the new runners.",
                "Issue: dark mode colours are wrong on Safari.", "Track the quarterly security audit.",
                "Task for Maria to review the API docs.", "Ticket about the export button doing nothing.",
                "Create a closed task for last week's deploy.", "An issue for the memory leak in the worker."]
PROMPTS = JSON_PROMPTS + MORE_PROMPTS


class RecordingGrammar(JsonGrammar):
    """Records the forced runs the scheduler takes: (generated ids before it, tokens it replaced, the run)."""

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


def boundaries(grammar: RecordingGrammar, vocab: TokenVocabulary, tokenizer, stops) -> tuple[int, int, int]:
    """(forced runs after a sampled token, how many replaced it, how many are not canonical with it)."""
    runs = healed = bad = 0
    for generated, drop, run in grammar.runs:
        if not generated:
            continue
        ids = [t for t in run if t not in stops]
        around = ids if drop else [generated[-1], *ids]
        try:
            text = b"".join(vocab.token_bytes(t) for t in around).decode("utf-8")
        except UnicodeDecodeError:
            continue
        runs, healed, bad = runs + 1, healed + drop, bad + (tokenizer.encode(text) != around)
    return runs, healed, bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--temperatures", default="0,0.7")
    ap.add_argument("--max-tokens", type=int, default=120)
    args = ap.parse_args()
    folder = REPO / "models" / args.model
    engine = ModelEngine.from_folder(folder, LlmModelConfig(path=folder, max_batch_size=8))
    vocab = TokenVocabulary.from_tokenizer_file(folder / "tokenizer.json", vocab_size=engine.vocab_size,
                                                stop_token_ids=tuple(sorted(engine.eos_token_ids)))
    forcers = {"off": None, "on": ForcedTokenizer(vocab, engine.tokenizer),
               "on+healing": ForcedTokenizer(vocab, engine.tokenizer, healing=True)}

    def one(i: int, mode: str, temperature: float) -> tuple:
        ff = mode != "off"
        grammar = RecordingGrammar(compile_json_schema(NESTED, vocab), forcers[mode] or forcers["on"])
        params = SamplingParams(max_tokens=args.max_tokens, temperature=temperature, seed=1000 + i, fast_forward=ff,
                                logit_processors=(grammar,))
        r = engine.chat([{"role": "user", "content": PROMPTS[i]}], params)
        finished = r.finish_reason != "length"
        valid = False
        if finished:
            try:
                jsonschema.validate(json.loads(r.text), NESTED,
                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
                valid = True
            except (ValueError, jsonschema.ValidationError):
                pass
        ids = [t for t in r.token_ids if t not in engine.eos_token_ids]
        canonical = engine.tokenizer.encode(engine.tokenizer.decode(ids)) == ids
        return finished, valid, r.text, canonical, boundaries(grammar, vocab, engine.tokenizer, engine.eos_token_ids)

    print("temperature | ff | finished | valid/finished | cut inside subtasks items | opened subtasks items | "
          "non-canonical answers | runs after a sampled token: healed, non-canonical | prompts finished")
    for temperature in (float(t) for t in args.temperatures.split(",")):
        for mode in forcers:
            with cf.ThreadPoolExecutor(8) as pool:
                res = list(pool.map(lambda i: one(i, mode, temperature), range(len(PROMPTS))))
            fin = sum(r[0] for r in res)
            items = [r for r in res if '"subtasks":[{' in r[2]]
            print(f"{temperature} | {mode} | {fin}/{len(res)} | {sum(r[1] for r in res)}/{fin} | "
                  f"{sum(not r[0] for r in items)}/{len(res) - fin} | {len(items)}/{len(res)} | "
                  f"{sum(not r[3] for r in res)}/{len(res)} | {sum(r[4][0] for r in res)}: "
                  f"{sum(r[4][1] for r in res)}, {sum(r[4][2] for r in res)} | {[i for i, r in enumerate(res) if r[0]]}",
                  flush=True)
    engine.close()


if __name__ == "__main__":
    main()
