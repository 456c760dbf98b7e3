"""Streaming detokenizer and stop-string hold-back, on the real Llama 3.2 tokenizer and a byte-fallback one."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers

from realizar_ort.generation.detokenizer import IncrementalDetokenizer, StopStringMatcher, TextStream
from realizar_ort.generation.results import GenerationDelta, GenerationResult, Usage
from realizar_ort.tokenizer import Tokenizer

TEXTS = [
    "Hello, world! How are you today?",
    "Emoji: 🦙🚀👩‍👩‍👧 and flags 🇫🇷🇯🇵.",
    "中文测试：你好，世界。日本語のテキスト、한국어 텍스트.",
    "Mixed: naïve café — “quotes” ∑x² ≤ ∞\n\ttabs and\r\nnewlines",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters and 🧑🏽‍💻 zwj sequences",
]


@pytest.fixture(scope="module")
def llama3(llama3_tokenizer_json: Path) -> Tokenizer:
    return Tokenizer.from_file(llama3_tokenizer_json)


def _stream(tok: Tokenizer, ids: list[int], skip_special_tokens: bool = True) -> list[str]:
    detok = IncrementalDetokenizer(tok, skip_special_tokens)
    return [detok.push(i) for i in ids] + [detok.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_stream_equals_decode_and_never_emits_half_characters(llama3: Tokenizer, text: str) -> None:
    ids = llama3.encode(text)
    pieces = _stream(llama3, ids)
    assert "".join(pieces) == llama3.decode(ids) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_the_corpus_really_splits_characters_across_tokens(llama3: Tokenizer) -> None:
    # Guard for the test above: some tokens of the emoji/CJK texts are incomplete UTF-8 on their own.
    split = [i for text in TEXTS for i in llama3.encode(text) if "\ufffd" in llama3.decode([i])]
    assert len(split) >= 3


def test_special_tokens_are_skipped_or_kept(llama3: Tokenizer) -> None:
    ids = llama3.encode("<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|>")
    assert llama3.token_id("<|eot_id|>") in ids
    assert "".join(_stream(llama3, ids)) == "assistant\n\nHi" == llama3.decode(ids)
    kept = "".join(_stream(llama3, ids, skip_special_tokens=False))
    assert kept == "<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|>"
    assert kept == llama3.decode(ids, skip_special_tokens=False)


def test_incomplete_character_at_the_end_becomes_replacement(llama3: Tokenizer) -> None:
    ids = llama3.encode("🦙")
    assert len(ids) > 1
    assert "".join(_stream(llama3, ids[:-1])) == llama3.decode(ids[:-1])
    assert "".join(_stream(llama3, ids[:-1])).endswith("\ufffd")


def test_token_ids_are_looked_up_by_text(llama3: Tokenizer) -> None:
    assert llama3.token_id("<|eot_id|>") == 128009
    assert llama3.token_id("<|python_tag|>") == 128010
    assert llama3.token_id("<|no such token|>") is None
    assert llama3.vocab_size == 128257
    assert llama3.encode("hi", add_special_tokens=True)[0] == llama3.token_id("<|begin_of_text|>")
    assert llama3.encode("hi") == llama3.encode("hi", add_special_tokens=False) != []


def _byte_fallback_tokenizer() -> Tokenizer:
    """A Llama-2-style SentencePiece BPE: ▁ for spaces, unknown characters fall back to <0xNN> bytes."""
    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    for piece in ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "el", "lo", "▁w"]:
        vocab[piece] = len(vocab)
    merges = [("▁", "h"), ("e", "l"), ("l", "o"), ("▁", "w")]
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=False))
    hf.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    hf.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    import json

    return Tokenizer(hf, json.loads(hf.to_str())["decoder"])


@pytest.mark.parametrize("text", ["hello world", "héllo wörld ☃", "🦙 hello", "  two  spaces"])
def test_byte_fallback_tokens_stream_like_decode(text: str) -> None:
    tok = _byte_fallback_tokenizer()
    ids = tok.encode(text)
    pieces = _stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)
    if any(ord(c) > 127 for c in text):
        assert any(i < 256 for i in ids)  # really went through <0xNN> byte tokens


def _run_matcher(stops: list[str], chunks: list[str]) -> tuple[list[str], str | None]:
    matcher = StopStringMatcher(stops)
    out = [matcher.push(c) for c in chunks]
    out.append(matcher.flush())
    return out, matcher.matched


def test_stop_string_split_across_chunks_is_never_emitted() -> None:
    out, matched = _run_matcher(["</end>"], ["Hello </", "en", "d> trailing"])
    assert "".join(out) == "Hello "
    assert matched == "</end>"
    assert out[0] == "Hello "  # "</" held back until it could be decided


def test_held_text_is_released_once_it_cannot_match() -> None:
    out, matched = _run_matcher(["xyz"], ["abcx", "y", "a", "b"])
    assert out == ["abc", "", "xya", "b", ""]
    assert matched is None


def test_earliest_stop_in_a_chunk_wins() -> None:
    out, matched = _run_matcher(["cd", "b"], ["abcd"])
    assert "".join(out) == "a" and matched == "b"


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="abc\n ", max_size=40),
    stops=st.lists(st.text(alphabet="abc\n ", min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 40), max_size=10),
)
def test_stop_matcher_properties(text: str, stops: list[str], cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    out, matched = _run_matcher(stops, chunks)
    emitted = "".join(out)
    assert text.startswith(emitted)
    assert not any(s in emitted for s in stops)
    if matched is None:
        assert emitted == text
    else:
        assert text[len(emitted) :].startswith(matched)


def test_text_stream_combines_detokenizer_and_stops(llama3: Tokenizer) -> None:
    ids = llama3.encode("Answer: 你好 STOP here")
    stream = TextStream(llama3, stops=["STOP"])
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) + stream.finish() == "Answer: 你好 "
    assert stream.matched_stop == "STOP"


def test_a_replaced_token_is_not_spelled_twice(llama3: Tokenizer) -> None:
    """Token healing: `t` was streamed, then `tags` `":` replace it. The text goes on from `ags`, stop
    strings see the same text, and the folded token ids are the new ones."""
    (t,), (tags,), quote_colon = llama3.encode("t"), llama3.encode("tags"), llama3.encode('":')
    stream = TextStream(llama3, stops=['s":'])
    first = stream.push(t)
    stream.replace_last(t)
    rest = "".join(stream.push(i) for i in [tags, *quote_colon])
    assert first == "t" and rest == "ag" and stream.matched_stop == 's":'
    usage = Usage(1, 2, 3)
    deltas = [GenerationDelta(first, (t,)), GenerationDelta(rest, (tags, *quote_colon), "stop", usage, replaces=1)]
    result = GenerationResult.fold(iter(deltas))
    assert result.token_ids == [tags, *quote_colon] and result.text == "tag"
