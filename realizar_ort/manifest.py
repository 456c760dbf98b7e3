"""The manifest the exporter writes beside every model, and the only thing the runtime trusts about it.

A model folder holds ``manifest.json`` next to ``model.onnx`` and ``tokenizer.json``. The runtime never
hard-codes ONNX input/output names or token ids: it reads them from here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_VERSION",
    "EmbeddingSpec",
    "LlmSpec",
    "Manifest",
    "ManifestError",
    "TensorSpec",
    "load_manifest",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


class ManifestError(ValueError):
    """A model folder's manifest is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class TensorSpec:
    """One ONNX graph input or output: its name, element type and shape (symbolic dims as strings)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class LlmSpec:
    """What a decoder-only chat model's graph and tokenizer look like."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int  # the model's logits width; can be smaller than the tokenizer's id range
    tokenizer_vocab_size: int
    context_length: int
    eos_token_ids: tuple[int, ...]  # every id that ends a turn (Llama 3: <|eot_id|>, <|eom_id|>, <|end_of_text|>)
    bos_token_id: int | None
    pad_token_id: int | None
    add_bos_token: bool  # whether the chat template / prompt needs bos prepended by the tokenizer step
    chat_format: Literal["llama3", "chatml"]  # selects the tool prompt strategy; never guessed from the name
    # How the graph keeps the KV cache:
    # - "concat" (the Optimum export): present = concat(past, new); rows are left-padded to one length and
    #   the graph takes attention_mask + position_ids.
    # - "shared_buffer" (the fused GroupQueryAttention graph): past and present are one preallocated buffer
    #   [batch, kv_heads, max_context, head_dim] written in place; each row has its own length, given as
    #   seqlens_k (row length - 1) and total_sequence_length (max row length).
    kv_layout: Literal["concat", "shared_buffer"] = "concat"
    # ONNX I/O names; the per-layer ones are templates with "{layer}".
    input_ids_name: str = "input_ids"
    attention_mask_name: str | None = "attention_mask"
    position_ids_name: str | None = "position_ids"
    seqlens_k_name: str | None = None
    total_sequence_length_name: str | None = None
    past_key_name: str = "past_key_values.{layer}.key"
    past_value_name: str = "past_key_values.{layer}.value"
    present_key_name: str = "present.{layer}.key"
    present_value_name: str = "present.{layer}.value"
    logits_name: str = "logits"
    last_logits_only: bool = True  # logits come out as [batch, 1, vocab] whatever the input length
    kv_dtype: str = "float32"
    generation_defaults: dict[str, Any] = field(default_factory=dict)

    def kv_io_names(self) -> tuple[list[str], list[str]]:
        """(past inputs, present outputs) for every layer's key then value, in the order KV caches keep them."""
        past, present = [], []
        for layer in range(self.num_layers):
            past += [self.past_key_name.format(layer=layer), self.past_value_name.format(layer=layer)]
            present += [self.present_key_name.format(layer=layer), self.present_value_name.format(layer=layer)]
        return past, present


@dataclass(frozen=True)
class EmbeddingSpec:
    """What a sentence-embedding model needs: pooling, normalisation and truncation, from its own config."""

    pooling: Literal["mean", "cls", "lasttoken"]
    normalize: bool
    max_seq_length: int
    embedding_dim: int
    output_name: str = "last_hidden_state"


@dataclass(frozen=True)
class Manifest:
    """Everything written by the exporter about one model folder."""

    kind: Literal["llm", "embedding"]
    name: str
    onnx_file: str
    tokenizer_file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dtype: str
    special_tokens: dict[str, int]
    source: dict[str, Any]  # {"kind", "path", "sha256"}
    exporter: dict[str, str]  # library -> version
    verification: dict[str, Any]  # parity check results; "passed" must be True
    llm: LlmSpec | None = None
    embedding: EmbeddingSpec | None = None
    chat_template_file: str | None = None
    # None for float weights; else {"method": "gguf"|"int4"|"int8", "block_size", "accuracy_level", "layers",
    # "float32_layers", ..., "quality": the export's quality report} (see export/quantize.py)
    quantization: dict[str, Any] | None = None
    manifest_version: int = MANIFEST_VERSION

    # ---- file round-trip -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            version = data.get("manifest_version", MANIFEST_VERSION)
            if version != MANIFEST_VERSION:
                raise ManifestError(f"manifest_version {version} is not supported (expected {MANIFEST_VERSION})")
            fields = dict(data)
            if isinstance(fields.get("quantization"), str):  # manifests before quantization was a section
                fields["quantization"] = {"method": fields["quantization"]}
            fields["inputs"] = tuple(_tensor(t) for t in data["inputs"])
            fields["outputs"] = tuple(_tensor(t) for t in data["outputs"])
            if data.get("llm") is not None:
                llm = dict(data["llm"])
                llm["eos_token_ids"] = tuple(llm["eos_token_ids"])
                fields["llm"] = LlmSpec(**llm)
            if data.get("embedding") is not None:
                fields["embedding"] = EmbeddingSpec(**data["embedding"])
            manifest = cls(**fields)
        except ManifestError:
            raise
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from exc
        if manifest.kind == "llm" and manifest.llm is None:
            raise ManifestError("an llm manifest needs an 'llm' section")
        if manifest.kind == "embedding" and manifest.embedding is None:
            raise ManifestError("an embedding manifest needs an 'embedding' section")
        return manifest

    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


def _tensor(data: dict[str, Any]) -> TensorSpec:
    return TensorSpec(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


def load_manifest(folder: str | Path) -> Manifest:
    """Read ``manifest.json`` from a model folder; refuse a model whose export checks did not pass."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path} not found: export the model first (realizar-ort export ...)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    manifest = Manifest.from_dict(data)
    if not manifest.verification.get("passed", False):
        raise ManifestError(f"{path}: the export's parity check did not pass; re-export the model")
    return manifest
