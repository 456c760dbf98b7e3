"""A thin wrapper over a `tokenizers` ``tokenizer.json``: encode, decode, special-token lookup, token bytes.

Truncation and padding configured inside the file are switched off: the engine decides lengths.
`token_bytes()` gives every id's exact byte string (byte-level BPE or SentencePiece-style byte fallback),
which the streaming detokenizer concatenates instead of re-decoding text. Threading: `tokenizers`
encode/decode release no shared state, so one instance serves many threads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from .errors import InvalidRequestError

__all__ = ["Tokenizer", "UnsupportedDecoderError"]

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")



def _not_unicode(text: str) -> InvalidRequestError:
    """The error for text the tokenizer cannot take: strings that are not valid Unicode (lone surrogates)."""
    bad = next((i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff"), None)
    where = f" at character {bad}" if bad is not None else ""
    return InvalidRequestError(f"the text is not valid Unicode: it holds a lone surrogate{where} "
                               "(encode text as UTF-8 before sending it)", "prompt")

class UnsupportedDecoderError(ValueError):
    """The tokenizer's decoder is not one whose token bytes we can reproduce exactly."""


def byte_level_decoder_table() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the printable character that stands for each byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class Tokenizer:
    """Encode/decode with one ``tokenizer.json``. ``vocab_size`` is the tokenizer's id range (which can
    exceed the model's logits width: the engine checks ids against the model, not against this)."""

    def __init__(self, tokenizer: HFTokenizer, decoder_spec: dict | None = None) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer
        self._decoder_spec = decoder_spec
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        added = tokenizer.get_added_tokens_decoder()  # id -> AddedToken
        self.special_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special)
        self.added_ids: frozenset[int] = frozenset(added)

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} not found")
        spec = json.loads(path.read_text(encoding="utf-8")).get("decoder")
        return cls(HFTokenizer.from_file(str(path)), spec)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. Special-token text (e.g. ``<|eot_id|>``) in `text` becomes its id.
        `add_special_tokens=True` applies the tokenizer's post-processor (e.g. prepends BOS).
        Raises `InvalidRequestError` for text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``)."""
        try:
            return self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        except TypeError:
            raise _not_unicode(text) from None

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        try:
            return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)]
        except TypeError:
            raise next((_not_unicode(t) for t in texts if isinstance(t, str)), _not_unicode("")) from None

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def pretoken_ends(self, text: str) -> list[int]:
        """Where the tokenizer's pre-tokenizer ends its pieces of `text` (character offsets, ascending):
        tokens never cross these boundaries. One piece (the whole text) when it has no pre-tokenizer."""
        pre = self._tok.pre_tokenizer
        if pre is None:
            return [len(text)]
        return [end for _, (_, end) in pre.pre_tokenize_str(text)]

    def token_id(self, text: str) -> int | None:
        """The id of a token written exactly as `text` (e.g. ``"<|python_tag|>"``), or None."""
        return self._tok.token_to_id(text)

    def token_text(self, token_id: int) -> str | None:
        """The raw vocabulary entry for an id (byte-level symbols, not decoded text), or None."""
        return self._tok.id_to_token(token_id)

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_ids

    # ---- exact bytes per token (for streaming) -------------------------------------------------------
    @cached_property
    def _bytes_table(self) -> tuple[list[bytes], bool]:
        """(bytes of every id, whether the decoder strips one leading space from the whole text)."""
        kind, strip_leading_space = self._decoder_kind()
        table: list[bytes] = []
        byte_of = byte_level_decoder_table() if kind == "byte_level" else {}
        for token_id in range(self.vocab_size):
            token = self._tok.id_to_token(token_id)
            if token is None:
                table.append(b"")
            elif kind == "byte_level":
                try:
                    table.append(bytes(byte_of[c] for c in token))
                except KeyError:  # what `tokenizers` does when a char is outside the byte alphabet
                    table.append(token.encode("utf-8"))
            else:
                match = _BYTE_TOKEN.match(token)
                table.append(
                    bytes([int(match.group(1), 16)]) if match else token.replace("\u2581", " ").encode()
                )
        self._verify(table)
        return table, strip_leading_space

    def _verify(self, table: list[bytes]) -> None:
        """Check the table against `decode` on every non-special id (one decode call, ~0.1 s for 128k).
        <0xNN> byte tokens are left out: `decode` turns a run of them that is not valid UTF-8 into one
        U+FFFD per token, where the incremental decoder keeps the valid parts."""
        ids = [
            i
            for i in range(self.vocab_size)
            if i not in self.special_ids and not _BYTE_TOKEN.match(self._tok.id_to_token(i) or "")
        ]
        expected = self._tok.decode(ids, skip_special_tokens=False)
        got = b"".join(table[i] for i in ids).decode("utf-8", errors="replace")
        if self._decoder_kind()[1]:
            got = got.removeprefix(" ")
        if got != expected:
            raise UnsupportedDecoderError(
                "this tokenizer's decoder does not decode token by token; cannot stream it"
            )

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes `token_id` contributes to decoded text (special tokens: their content)."""
        return self._bytes_table[0][token_id]

    @property
    def strips_leading_space(self) -> bool:
        """SentencePiece-style decoders drop one space at the start of the decoded text."""
        return self._bytes_table[1]

    def _decoder_kind(self) -> tuple[str, bool]:
        spec = self._decoder_spec
        if spec is None:
            raise UnsupportedDecoderError("tokenizer.json has no decoder; cannot stream its text exactly")
        parts = spec["decoders"] if spec.get("type") == "Sequence" else [spec]
        types = [p.get("type") for p in parts]
        if types == ["ByteLevel"]:
            return "byte_level", False
        # GGUF-converted tokenizers chain ByteFallback + Fuse + Replace('▁',' ') + ByteLevel; with a
        # byte-level alphabet (no '▁', no <0xNN> tokens) the first three are no-ops, checked in _verify.
        if "ByteLevel" in types and set(types) <= {"ByteLevel", "ByteFallback", "Fuse", "Replace"}:
            return "byte_level", False
        replaces_metaspace = any(
            p.get("type") == "Replace"
            and p.get("pattern", {}).get("String") == "\u2581"
            and p.get("content") == " "
            for p in parts
        )
        allowed = {"Replace", "ByteFallback", "Fuse", "Strip"}
        if replaces_metaspace and set(types) <= allowed:
            strip = any(
                p.get("type") == "Strip" and p.get("content") == " " and p.get("start", 0) >= 1 for p in parts
            )
            return "sentencepiece", strip
        raise UnsupportedDecoderError(
            f"tokenizer decoder {types} is not supported for streaming (supported: ByteLevel; "
            "Replace('\u2581',' ') + ByteFallback + Fuse + Strip)"
        )
