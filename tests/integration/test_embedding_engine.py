"""EmbeddingEngine on the exported all-MiniLM-L6-v2: parity with sentence-transformers' recorded vectors
(no torch here), truncation, token ids, unicode, thread safety and coalescing of concurrent calls."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from realizar_ort.config import EmbeddingModelConfig, SessionConfig
from realizar_ort.embeddings.engine import (
    EmbeddingEngine,
    EmbeddingError,
    InputTooLongError,
    TokenIdOutOfRangeError,
)

MIN_COSINE = 0.9999
LONG_TEXT = "Streaming readers keep memory bounded while the embedder works through the backlog. " * 40


def _engine(folder: Path, **kwargs: object) -> EmbeddingEngine:
    return EmbeddingEngine.from_folder(folder, EmbeddingModelConfig(path=folder, session=SessionConfig(intra_op_threads=2), **kwargs))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def engine(minilm_dir: Path):
    with _engine(minilm_dir) as eng:
        yield eng


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> tuple[list[str], np.ndarray]:
    data = np.load(minilm_dir / "reference.npz", allow_pickle=False)
    return [str(t) for t in data["texts"]], data["vectors"]


def test_manifest_carries_the_models_own_sentence_transformers_config(engine: EmbeddingEngine) -> None:
    assert (engine.spec.pooling, engine.spec.normalize) == ("mean", True)
    assert engine.max_seq_length == 256 and engine.dimension == 384
    assert "token_type_ids" in engine.manifest.input_names()  # BERT graph: fed because it is declared
    assert engine.manifest.verification["passed"] is True


@pytest.mark.parametrize("batch_size", [1, 7, 32, 128])
def test_parity_with_sentence_transformers_reference(engine: EmbeddingEngine, reference, batch_size: int) -> None:
    texts, expected = reference
    assert "" in texts and any(engine.count_tokens([t])[0] == 256 for t in texts)  # the corpus is varied
    got = engine.embed_numpy(texts, batch_size=batch_size)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert _cosines(got, expected).min() >= MIN_COSINE


def test_first_dimensions_of_known_sentence_match_canonical(engine: EmbeddingEngine, reference) -> None:
    texts, expected = reference
    assert texts[0] == "This is an example sentence"
    got = engine.embed([texts[0]])[0]
    assert len(got) == 384 and all(isinstance(x, float) for x in got)
    np.testing.assert_allclose(got[:8], expected[0, :8], atol=1e-3)


def test_vectors_do_not_depend_on_batch_company(engine: EmbeddingEngine, reference) -> None:
    texts, _ = reference
    together = engine.embed_numpy(texts + ["hello"] * 3, batch_size=16)
    alone = np.stack([engine.embed_numpy([t], batch_size=1)[0] for t in texts])
    np.testing.assert_allclose(together[: len(texts)], alone, atol=1e-5)
    np.testing.assert_allclose(together[-3:], np.repeat(together[[texts.index("hello")]], 3, axis=0), atol=1e-5)


def test_long_text_is_truncated_to_max_seq_length(engine: EmbeddingEngine) -> None:
    result = engine.embed_with_usage([LONG_TEXT, "short"])
    assert result.token_counts[0] == 256 and result.token_counts[1] == 3
    assert result.total_tokens == 259
    # Same vector as the first 254 content tokens fed as ids ([CLS] + 254 + [SEP] = 256).
    tok = Tokenizer.from_file(str(engine.folder / "tokenizer.json"))
    tok.no_truncation()
    ids = tok.encode(LONG_TEXT, add_special_tokens=False).ids
    assert len(ids) > 256
    via_ids = engine.embed_token_ids([ids[:254]]).vectors
    np.testing.assert_allclose(result.vectors[:1], via_ids, atol=1e-5)


def test_overflow_error_names_the_input(minilm_dir: Path) -> None:
    with _engine(minilm_dir, overflow="error") as strict:
        assert strict.embed_numpy(["fits", "x " * 100]).shape == (2, 384)
        with pytest.raises(InputTooLongError, match=r"input 1 has \d+ tokens, more than the model's limit of 256") as info:
            strict.embed(["fits", LONG_TEXT])
        assert info.value.index == 1 and info.value.num_tokens > 256
        assert strict.count_tokens([LONG_TEXT]) == [256]  # counting never raises
        with pytest.raises(InputTooLongError, match="input 0 has 301 tokens"):
            strict.embed_token_ids([[1000] * 299])


def test_token_ids_embed_like_the_text(engine: EmbeddingEngine) -> None:
    tok = Tokenizer.from_file(str(engine.folder / "tokenizer.json"))
    texts = ["The new movie is awesome!", "", "東京 🚀"]
    ids = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    result = engine.embed_token_ids(ids)
    np.testing.assert_allclose(result.vectors, engine.embed_numpy(texts), atol=1e-5)
    assert result.token_counts == tuple(engine.count_tokens(texts))


@pytest.mark.parametrize("bad", [30522, -1, 10**12, 1.5, True, "7"])
def test_token_ids_outside_vocabulary_are_refused(engine: EmbeddingEngine, bad: object) -> None:
    with pytest.raises(TokenIdOutOfRangeError, match=r"input 1, position 2: token id .* is outside the vocabulary \(valid ids are 0..30521\)"):
        engine.embed_token_ids([[101], [7, 8, bad]])  # type: ignore[list-item]


def test_non_string_inputs_are_refused(engine: EmbeddingEngine) -> None:
    with pytest.raises(EmbeddingError, match="input 1 is int, expected a string"):
        engine.embed(["ok", 5])  # type: ignore[list-item]
    with pytest.raises(EmbeddingError, match="not a single string"):
        engine.embed("just a string")  # type: ignore[arg-type]
    assert engine.embed([]) == [] and engine.embed_numpy([]).shape == (0, 384)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=6))
def test_any_unicode_gives_finite_unit_vectors(engine: EmbeddingEngine, texts: list[str]) -> None:
    vectors = engine.embed_numpy(texts)
    assert vectors.shape == (len(texts), 384) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert all(2 <= n <= 256 for n in engine.count_tokens(texts))


def test_concurrent_single_sentence_calls_share_batches(minilm_dir: Path) -> None:
    clients = 50
    sentences = [f"client {i} asks about vector search number {i * 7}" for i in range(clients)]
    with _engine(minilm_dir, batch_size=64, max_wait_ms=200.0) as eng:
        expected = eng.embed_numpy(sentences, batch_size=1)
        runs_before = eng.stats.session_runs
        results: list[np.ndarray | None] = [None] * clients
        barrier = threading.Barrier(clients)

        def client(i: int) -> None:
            barrier.wait()
            results[i] = eng.embed_numpy([sentences[i]])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        runs = eng.stats.session_runs - runs_before
    assert runs < clients // 5, f"{clients} single-sentence calls took {runs} session runs"
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-5)  # each got its own vector


def test_concurrent_large_calls_are_thread_safe(engine: EmbeddingEngine, reference) -> None:
    texts, expected = reference
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            rolled = texts[offset:] + texts[:offset]
            got = engine.embed_numpy(rolled * 2)
            want = np.concatenate([expected[offset:], expected[:offset]] * 2)
            assert _cosines(got, want).min() >= MIN_COSINE
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_closed_engine_still_embeds_in_the_callers_thread(minilm_dir: Path) -> None:
    eng = _engine(minilm_dir)
    first = eng.embed_numpy(["before close"])
    eng.close()
    eng.close()
    np.testing.assert_allclose(eng.embed_numpy(["before close"]), first, atol=1e-6)
