"""Token bytes and the flat byte tries the grammar kernel walks, built once per tokenizer.

A grammar works on bytes, a model on token ids: this module turns a ``tokenizer.json`` into the exact
bytes each token id stands for, then into tables :mod:`realizar_ort.kernels.token_mask` reads.

- Byte-level BPE (Llama 3, SmolLM2, GPT-2): token strings use the GPT-2 byte-to-unicode map.
- SentencePiece-style (Llama 2, Mistral): ``▁`` is a space and ``<0xNN>`` is the raw byte ``NN``.
- Added/special tokens (``<|eot_id|>``...) have no bytes here: a grammar never allows them inside JSON.
  Stop tokens are handled apart, by the matcher.

Cost: about a second for the 128k Llama 3 vocabulary the first time; the tables are then cached as an
``.npz`` under ``~/.cache/realizar-ort/vocab`` keyed by the tokenizer file's sha256 and ``vocab_size``
(``REALIZAR_ORT_CACHE`` overrides the root), and load in milliseconds. Built tables are read-only and safe
to share between threads.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tokenizer import byte_level_decoder_table

__all__ = [
    "BYTE_GROUP",
    "NUM_BYTE_GROUPS",
    "PLAIN_BYTES",
    "PLAIN_GROUPS",
    "TokenTrie",
    "TrieForest",
    "VocabTables",
    "build_vocab_tables",
    "load_vocab_tables",
    "pack_forest",
    "plain_suffix_trie",
    "token_bytes_from_tokenizer_json",
    "tokenizer_sha256",
]

_CACHE_FORMAT = 7
_TRIE_FIELDS = ("byte", "skip", "depth", "token_ptr", "token_ids", "sub_groups")


def _byte_groups() -> np.ndarray:
    """Byte -> group (< 64), so a set of bytes fits one uint64 as a set of groups.

    Groups: control bytes, DEL, non-ASCII bytes, each digit, ``a-f``, ``g-z``, ``A-F``, ``G-Z``, and each of
    space and the 32 ASCII punctuation characters on its own. Plain JSON-string ASCII and the usual regex
    classes (``[0-9]``, ``[1-9]``, ``[a-z]``, ``[A-Za-z0-9._%+-]``, hex digits ...) are unions of groups, so
    a "subtree uses only these bytes" test on group sets is exact for them (and conservative otherwise).
    """
    group = np.zeros(256, dtype=np.uint8)  # 0: control bytes 0x00-0x1F
    group[0x7F] = 1
    group[0x80:] = 2
    nxt = 3
    for lo, hi in ((0x30, 0x30), (0x31, 0x31), (0x32, 0x32), (0x33, 0x33), (0x34, 0x34), (0x35, 0x35),
                   (0x36, 0x36), (0x37, 0x37), (0x38, 0x38), (0x39, 0x39), (0x61, 0x66), (0x67, 0x7A),
                   (0x41, 0x46), (0x47, 0x5A)):
        group[lo:hi + 1] = nxt
        nxt += 1
    for b in range(0x20, 0x7F):
        if not (0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A):
            group[b] = nxt
            nxt += 1
    assert nxt <= 64
    return group


BYTE_GROUP = _byte_groups()
NUM_BYTE_GROUPS = int(BYTE_GROUP.max()) + 1
_GROUP_BIT = np.left_shift(np.uint64(1), BYTE_GROUP.astype(np.uint64))  # uint64 [256]
# the groups of the bytes a JSON string takes unescaped (0x20-0x7F but '"' and '\\'): a union of groups
PLAIN_GROUPS = np.bitwise_or.reduce(_GROUP_BIT[[b for b in range(0x20, 0x80) if b not in (0x22, 0x5C)]])


def _components(node: dict | None) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        inner = node.get("decoders") or node.get("pretokenizers") or []
        return [part for child in inner for part in _components(child)]
    return [node]


def token_bytes_from_tokenizer_json(data: dict) -> list[bytes | None]:
    """Bytes for every id of a parsed ``tokenizer.json``; ``None`` for added/special tokens and gaps.

    Raises ``ValueError`` naming the model type or decoder when the scheme is not one we decode exactly.
    """
    model = data.get("model") or {}
    model_type = model.get("type")
    if model_type in ("BPE", "WordLevel"):
        pieces = {int(i): tok for tok, i in model["vocab"].items()}
    elif model_type == "Unigram":
        pieces = {i: entry[0] for i, entry in enumerate(model["vocab"])}
    else:
        raise ValueError(f"unsupported tokenizer model type {model_type!r} (expected BPE or Unigram)")
    decoders = [c.get("type") for c in _components(data.get("decoder"))]
    pretokenizers = [c.get("type") for c in _components(data.get("pre_tokenizer"))]
    byte_level = "ByteLevel" in decoders or "ByteLevel" in pretokenizers
    sentencepiece = (
        "ByteFallback" in decoders or "Metaspace" in decoders or "Metaspace" in pretokenizers
        or bool(model.get("byte_fallback")) or any(
            c.get("type") == "Replace" and c.get("pattern", {}).get("String") == "\u2581"
            for c in _components(data.get("decoder")))
    )
    if not byte_level and not sentencepiece:
        raise ValueError(f"unsupported tokenizer decoder {decoders!r}: expected ByteLevel or SentencePiece-style")

    added = {int(t["id"]) for t in data.get("added_tokens", [])}
    size = max([*pieces, *added, -1]) + 1
    out: list[bytes | None] = [None] * size
    if byte_level:
        table = byte_level_decoder_table()
        for i, piece in pieces.items():
            try:
                out[i] = bytes(table[ch] for ch in piece)
            except KeyError:
                out[i] = None  # not a byte-level string: cannot stand for exact bytes
    else:
        for i, piece in pieces.items():
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                try:
                    out[i] = bytes([int(piece[3:5], 16)])
                    continue
                except ValueError:
                    pass
            out[i] = piece.replace("\u2581", " ").encode("utf-8")
    for i in added:
        out[i] = None
    for i, raw in enumerate(out):
        if raw is not None and len(raw) == 0:
            out[i] = None
    return out


@dataclass(frozen=True)
class TokenTrie:
    """A byte trie in preorder: node ``i``'s subtree is ``[i, skip[i])``; node 0 is the root.

    ``depth[i]`` is the prefix length of node ``i``; the token ids ending exactly at node ``i`` are
    ``token_ids[token_ptr[i]:token_ptr[i + 1]]``.
    """

    byte: np.ndarray  # uint8 [nodes]
    skip: np.ndarray  # int32 [nodes]
    depth: np.ndarray  # int32 [nodes]
    token_ptr: np.ndarray  # int32 [nodes + 1]
    token_ids: np.ndarray  # int32 [tokens]
    sub_groups: np.ndarray  # uint64 [nodes]: the byte groups (BYTE_GROUP) anywhere in node i's subtree

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.byte, self.skip, self.depth, self.token_ptr, self.token_ids, self.sub_groups)


@dataclass(frozen=True)
class TrieForest:
    """Several :class:`TokenTrie` packed for the kernel (fewer arguments, one cache line per node).

    ``nodes[i] = (byte, depth, skip, token_start)`` with a sentinel row at the end, skips and token
    offsets global; trie ``k`` is the node range ``roots[k]`` and ``root_children[k, b]`` is the node of
    its first byte ``b`` (or -1), so a walk never touches the first-byte nodes a state cannot take.
    """

    nodes: np.ndarray  # int32 [total_nodes + 1, 4]
    token_ids: np.ndarray  # int32 [total_tokens]
    sub_groups: np.ndarray  # uint64 [total_nodes + 1]
    roots: np.ndarray  # int32 [tries, 2]: node range (root node excluded)
    root_children: np.ndarray  # int32 [tries, 256]


def pack_forest(tries: list[TokenTrie]) -> TrieForest:
    """Concatenate tries into one :class:`TrieForest` (numpy, a few ms at 128k tokens)."""
    node_parts, id_parts, sub_parts = [], [], []
    roots = np.zeros((len(tries), 2), dtype=np.int32)
    root_children = np.full((len(tries), 256), -1, dtype=np.int32)
    base = tok_base = 0
    for k, trie in enumerate(tries):
        n = trie.byte.shape[0]
        rows = np.empty((n, 4), dtype=np.int32)
        rows[:, 0] = trie.byte
        rows[:, 1] = trie.depth
        rows[:, 2] = trie.skip + base
        rows[:, 3] = trie.token_ptr[:n] + tok_base
        node_parts.append(rows)
        id_parts.append(trie.token_ids)
        sub_parts.append(trie.sub_groups)
        roots[k] = (base + 1, base + n)
        first = np.flatnonzero(trie.depth == 1)
        root_children[k, trie.byte[first]] = first + base
        base += n
        tok_base += int(trie.token_ptr[-1])
    node_parts.append(np.asarray([[0, 0, base, tok_base]], dtype=np.int32))
    sub_parts.append(np.zeros(1, dtype=np.uint64))
    return TrieForest(np.ascontiguousarray(np.concatenate(node_parts)), np.concatenate(id_parts).astype(np.int32),
                      np.concatenate(sub_parts), roots, root_children)


def _build_trie(items: list[tuple[bytes, int]]) -> TokenTrie:
    items.sort()
    node_byte = [0]
    node_depth = [0]
    node_tokens: list[list[int]] = [[]]
    node_parent = [0]
    path = [0]  # node index for each prefix length of the previous token
    prev = b""
    for raw, tid in items:
        common = 0
        limit = min(len(raw), len(prev))
        while common < limit and raw[common] == prev[common]:
            common += 1
        del path[common + 1:]
        for d in range(common, len(raw)):
            node_byte.append(raw[d])
            node_depth.append(d + 1)
            node_tokens.append([])
            node_parent.append(path[-1])
            path.append(len(node_byte) - 1)
        node_tokens[path[len(raw)]].append(tid)
        prev = raw
    depth = np.asarray(node_depth, dtype=np.int32)
    n = len(depth)
    skip = np.empty(n, dtype=np.int32)
    # skip[i] = first later node with depth <= depth[i] (preorder subtree end)
    open_nodes: list[int] = []
    for i in range(n):
        d = node_depth[i]
        while open_nodes and node_depth[open_nodes[-1]] >= d:
            skip[open_nodes.pop()] = i
        open_nodes.append(i)
    for i in open_nodes:
        skip[i] = n
    counts = np.fromiter((len(t) for t in node_tokens), dtype=np.int32, count=n)
    token_ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=token_ptr[1:])
    token_ids = np.fromiter((t for ts in node_tokens for t in ts), dtype=np.int32, count=int(token_ptr[-1]))
    byte = np.asarray(node_byte, dtype=np.uint8)
    parent = np.asarray(node_parent, dtype=np.int64)
    sub = _GROUP_BIT[byte]
    sub[0] = 0
    for d in range(int(depth.max(initial=0)), 1, -1):  # children into parents, deepest first
        idx = np.flatnonzero(depth == d)
        np.bitwise_or.at(sub, parent[idx], sub[idx])
    return TokenTrie(byte, skip, depth, token_ptr, token_ids, sub)


PLAIN_BYTES = np.asarray([b for b in range(0x20, 0x80) if b not in (0x22, 0x5C)], dtype=np.uint8)
_IS_PLAIN_BYTE = np.zeros(256, dtype=bool)
_IS_PLAIN_BYTE[PLAIN_BYTES] = True


def plain_suffix_trie(trie: TokenTrie, tables: VocabTables) -> TokenTrie:
    """The tokens of ``trie`` keyed by what follows their leading run of plain string bytes (``PLAIN_BYTES``).

    From a state where every plain byte loops back with no flag (an unbounded string body), a token is
    accepted exactly when its suffix is, so walking this trie (each node holding every token with that
    suffix) gives the same tokens as walking ``trie`` with about half the nodes at 128k tokens. Raises
    ``ValueError`` if a token is plain bytes only (it has no place here). ~5 ms at 128k tokens.
    """
    items = []
    for tid in trie.token_ids.tolist():
        raw = tables.token_bytes(tid)
        k = 0
        while k < len(raw) and _IS_PLAIN_BYTE[raw[k]]:
            k += 1
        if k == len(raw):
            raise ValueError(f"token {tid} is plain bytes only: it has no suffix to key it by")
        items.append((raw[k:], tid))
    return _build_trie(items)


def _plain_chars(raw: bytes) -> int:
    """Code points in ``raw`` if it is whole UTF-8 with no ``"``, ``\\`` or control character, else -1."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return -1
    if any(ch == '"' or ch == "\\" or ord(ch) < 0x20 for ch in text):
        return -1
    return len(text)


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _string_event(raw: bytes) -> tuple[str, int]:
    """How a non-plain token fares from inside a JSON string: ("reject" | "open" | "close", chars).

    "reject": its first non-plain event is a raw control byte or invalid UTF-8, which every string state
    rejects. "close": it has a quote that ends the string; ``chars`` is the characters before it (escapes
    count one). "open": it stays inside a *free* string (any escape form, partial escape or UTF-8
    character at the end); ``chars`` is the room it needs (a partial character needs one).
    Canonical/pattern strings accept fewer escapes, so their "open" tokens are still walked.
    """
    i = chars = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b == 0x22:
            return "close", chars
        if b == 0x5C:
            if i + 1 >= n:
                return "open", chars + 1
            c = raw[i + 1]
            if c in b'"\\/bfnrt':
                i, chars = i + 2, chars + 1
                continue
            if c != ord("u"):
                return "reject", 0
            hexes = raw[i + 2:i + 6]
            if any(h not in _HEX for h in hexes) or (len(hexes) >= 2 and hexes[0] in b"dD" and hexes[1] not in b"01234567"):
                return "reject", 0
            if len(hexes) < 4:
                return "open", chars + 1
            i, chars = i + 6, chars + 1
            continue
        if b < 0x20:
            return "reject", 0
        if b < 0x80:
            i, chars = i + 1, chars + 1
            continue
        width = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
        if width == 0:
            return "reject", 0
        try:
            raw[i:i + width].decode("utf-8")
        except UnicodeDecodeError as exc:
            if i + width > n and exc.reason == "unexpected end of data":
                return "open", chars + 1
            return "reject", 0
        i, chars = i + width, chars + 1
    return "open", chars


@dataclass(frozen=True)
class VocabTables:
    """Everything the mask kernel needs about one (tokenizer, vocab_size).

    ``trie`` holds every allowed-in-JSON token. Inside a string (a state that loops on every plain
    character) a mask is ``plain_upto[min(room, last row)]`` (the plain tokens: whole UTF-8, no quote,
    backslash or control character, of at most ``room`` characters) OR ``text_open_upto[min(room, last)]``
    (plain text then the start of a UTF-8 character: every such state takes them, room permitting) OR the
    walk of ``rest_trie``, which holds the other non-plain tokens a string state could accept (a quote or a
    backslash before any control byte or invalid UTF-8). Each of those adds at most ``rest_max_chars``
    characters to the open string, so string-length slack beyond that does not change the walk.

    In a *free* string (any escape form) the tokens that stay inside it are known without a walk:
    ``open_upto[k]`` (needing at most ``k`` characters of room); only ``close_trie`` (tokens whose quote ends
    the string, at most ``close_max_chars`` characters before it) is walked.
    """

    vocab_size: int
    token_data: np.ndarray  # uint8, all token bytes concatenated
    token_offsets: np.ndarray  # int64 [vocab_size + 1]; empty range = never allowed in JSON
    trie: TokenTrie
    rest_trie: TokenTrie
    plain_upto: np.ndarray  # int32 [max_plain_chars + 1, words]
    max_token_bytes: int
    rest_max_chars: int
    close_trie: TokenTrie
    open_upto: np.ndarray  # int32 [max_open_chars + 1, words]
    close_max_chars: int
    token_groups: np.ndarray  # uint64 [vocab_size]: the byte groups (BYTE_GROUP) of each token's bytes
    text_open_upto: np.ndarray  # int32 [max_chars + 1, words]: plain text then a partial UTF-8 character

    def token_bytes(self, token_id: int) -> bytes:
        return self.token_data[self.token_offsets[token_id]:self.token_offsets[token_id + 1]].tobytes()


def build_vocab_tables(token_bytes: list[bytes | None], vocab_size: int) -> VocabTables:
    """Build the tables from per-id bytes; ids ``>= vocab_size`` are dropped. Pure Python, ~1 s at 128k."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    lengths = np.zeros(vocab_size, dtype=np.int64)
    chunks: list[bytes] = []
    all_items: list[tuple[bytes, int]] = []
    rest_items: list[tuple[bytes, int]] = []
    words = (vocab_size + 31) // 32
    plain_ids: list[int] = []
    plain_len: list[int] = []
    rest_max = close_max = 0
    close_items: list[tuple[bytes, int]] = []
    open_ids: list[int] = []
    open_len: list[int] = []
    text_open_ids: list[int] = []
    text_open_len: list[int] = []
    for tid in range(min(vocab_size, len(token_bytes))):
        raw = token_bytes[tid]
        if raw is None:
            continue
        lengths[tid] = len(raw)
        chunks.append(raw)
        all_items.append((raw, tid))
        chars = _plain_chars(raw)
        if chars > 0:
            plain_ids.append(tid)
            plain_len.append(chars)
            continue
        kind, added = _string_event(raw)
        if kind == "open" and 0x5C not in raw:  # plain text, then part of a UTF-8 character: any string takes it
            text_open_ids.append(tid)
            text_open_len.append(added)
        elif kind != "reject":
            rest_items.append((raw, tid))
            rest_max = max(rest_max, added)
        if kind == "close":
            close_items.append((raw, tid))
            close_max = max(close_max, added)
        elif kind == "open":
            open_ids.append(tid)
            open_len.append(added)
    offsets = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8).copy()
    token_groups = np.zeros(vocab_size, dtype=np.uint64)
    nonempty = np.flatnonzero(lengths > 0)
    if nonempty.size:
        token_groups[nonempty] = np.bitwise_or.reduceat(_GROUP_BIT[data], offsets[nonempty])
    plain_upto = _rows_upto(plain_ids, plain_len, words)
    open_upto = _rows_upto(open_ids, open_len, words)
    text_open_upto = _rows_upto(text_open_ids, text_open_len, words)
    return VocabTables(
        vocab_size=vocab_size,
        token_data=data,
        token_offsets=offsets,
        trie=_build_trie(all_items),
        rest_trie=_build_trie(rest_items),
        plain_upto=plain_upto,
        max_token_bytes=int(lengths.max(initial=0)),
        rest_max_chars=rest_max,
        close_trie=_build_trie(close_items),
        open_upto=open_upto,
        close_max_chars=close_max,
        token_groups=token_groups,
        text_open_upto=text_open_upto,
    )


def _rows_upto(token_ids: list[int], needs: list[int], words: int) -> np.ndarray:
    """Row k = bitmask of the tokens whose need is <= k (need 0 counts from row 0)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    lens = np.asarray(needs, dtype=np.int64)
    top = int(lens.max(initial=0))
    rows = np.zeros((top + 1, words), dtype=np.uint32)
    for k in range(top + 1):
        sel = ids[lens == k]
        if k:
            rows[k] = rows[k - 1]
        np.bitwise_or.at(rows[k], sel >> 5, (np.uint32(1) << (sel & 31).astype(np.uint32)))
    return rows.view(np.int32)


def tokenizer_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cache_dir() -> Path:
    root = os.environ.get("REALIZAR_ORT_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "realizar-ort"
    return base / "vocab"


def _save(tables: VocabTables, path: Path) -> None:
    arrays = {
        "format": np.asarray([_CACHE_FORMAT, tables.vocab_size, tables.max_token_bytes, tables.rest_max_chars,
                              tables.close_max_chars], dtype=np.int64),
        "open_upto": tables.open_upto,
        "token_data": tables.token_data,
        "token_offsets": tables.token_offsets,
        "plain_upto": tables.plain_upto,
        "token_groups": tables.token_groups,
        "text_open_upto": tables.text_open_upto,
    }
    for name, trie in (("trie", tables.trie), ("rest", tables.rest_trie), ("close", tables.close_trie)):
        for field, arr in zip(_TRIE_FIELDS, trie.arrays):
            arrays[f"{name}_{field}"] = arr
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load(path: Path) -> VocabTables | None:
    try:
        with np.load(path) as z:
            fmt = z["format"]
            if int(fmt[0]) != _CACHE_FORMAT:
                return None
            tries = [
                TokenTrie(*(z[f"{name}_{field}"] for field in _TRIE_FIELDS))
                for name in ("trie", "rest", "close")
            ]
            return VocabTables(int(fmt[1]), z["token_data"], z["token_offsets"], tries[0], tries[1],
                               z["plain_upto"], int(fmt[2]), int(fmt[3]), tries[2], z["open_upto"], int(fmt[4]),
                               z["token_groups"], z["text_open_upto"])
    except (OSError, KeyError, ValueError):
        return None


def load_vocab_tables(tokenizer_path: str | os.PathLike[str], vocab_size: int | None = None,
                      *, use_disk_cache: bool = True) -> tuple[VocabTables, str]:
    """Tables for a ``tokenizer.json`` (from the disk cache when present) and the file's sha256.

    ``vocab_size`` defaults to the tokenizer's id count; pass the model's logits width.
    """
    raw = Path(tokenizer_path).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    token_bytes = None
    if vocab_size is None:
        token_bytes = token_bytes_from_tokenizer_json(json.loads(raw))
        vocab_size = len(token_bytes)
    path = _cache_dir() / f"{sha}-{vocab_size}.npz"
    if use_disk_cache and path.is_file():
        tables = _load(path)
        if tables is not None and tables.vocab_size == vocab_size:
            return tables, sha
    if token_bytes is None:
        token_bytes = token_bytes_from_tokenizer_json(json.loads(raw))
    tables = build_vocab_tables(token_bytes, vocab_size)
    if use_disk_cache:
        try:
            _save(tables, path)
        except OSError:
            pass  # a read-only home still works, only slower
    return tables, sha
