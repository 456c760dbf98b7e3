"""The quality gate a quantized export must pass: perplexity on our own prose and greedy agreement with fp32.

- **Perplexity** on ``eval_prose.txt`` (~2,300 words of ordinary English written for this repository, ~2,600
  tokens), scored the way ``llama-perplexity`` does so the figures are comparable with llama.cpp's on the
  same GGUF: non-overlapping windows of `CONTEXT` tokens, the first token of a window replaced by BOS when
  the model adds one, and only the second half of each window scored (every scored token has at least
  ``CONTEXT / 2`` tokens of context). Computed with an all-positions-logits twin of the exported graph.
- **Greedy agreement** with the unquantized model on the golden prompts (``golden.json``: transformers'
  fp32 greedy tokens): the share of tokens generated before the first divergence.

`check` raises `QualityGateError` naming every breached threshold; the export then fails loudly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realizar_ort.onnx_session import create_session

__all__ = ["CONTEXT", "PROSE_FILE", "QualityGateError", "QualityThresholds", "check", "greedy_agreement",
           "perplexity", "prose_ids"]

PROSE_FILE = Path(__file__).resolve().parent / "eval_prose.txt"
CONTEXT = 512


class QualityGateError(RuntimeError):
    """A quantized export breached a quality threshold."""


@dataclass(frozen=True)
class QualityThresholds:
    max_perplexity_increase: float = 0.10  # quantized perplexity <= fp32 * (1 + this)
    min_greedy_agreement: float = 0.50  # share of golden greedy tokens reproduced before the first divergence


def prose_ids(tokenizer_file: Path) -> list[int]:
    from tokenizers import Tokenizer

    text = PROSE_FILE.read_text(encoding="utf-8")
    return Tokenizer.from_file(str(tokenizer_file)).encode(text, add_special_tokens=False).ids


def perplexity(onnx_path: Path, spec: dict[str, Any], ids: list[int], context: int = CONTEXT) -> dict[str, Any]:
    """llama-perplexity's score over `ids` with an all-logits graph (``logits [1, S, vocab]``)."""
    session = create_session(onnx_path)
    bos = spec["bos_token_id"] if spec["add_bos_token"] else None
    windows = len(ids) // context
    if windows == 0:
        raise ValueError(f"need at least {context} tokens for perplexity, got {len(ids)}")
    first = context // 2
    nll, count = 0.0, 0
    for w in range(windows):
        chunk = list(ids[w * context:(w + 1) * context])
        if bos is not None:
            chunk[0] = bos
        logits = _all_logits(session, spec, chunk)[0]  # [S, V]
        scored = logits[first:context - 1, : spec["vocab_size"]].astype(np.float64)
        targets = np.array(chunk[first + 1:context])
        top = scored.max(axis=-1)
        log_z = top + np.log(np.exp(scored - top[:, None]).sum(axis=-1))
        nll += float((log_z - scored[np.arange(len(targets)), targets]).sum())
        count += len(targets)
    return {"perplexity": round(math.exp(nll / count), 4), "scored_tokens": count, "windows": windows,
            "context": context}


def greedy_agreement(onnx_path: Path, spec: dict[str, Any], golden_file: Path) -> dict[str, Any]:
    """Tokens reproduced before the first divergence from the golden (fp32) greedy continuations."""
    session = create_session(onnx_path)
    golden = json.loads(golden_file.read_text())
    max_new = golden["max_new_tokens"]
    kept = total = 0
    per_prompt = []
    for record in golden["prompts"]:
        expected = record["greedy_ids"]
        got = _greedy(session, spec, record["prompt_ids"], len(expected) if expected else max_new)
        same = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        per_prompt.append(f"{same}/{len(expected)}")
        kept += same
        total += len(expected)
    return {"agreement": round(kept / max(total, 1), 4), "tokens": f"{kept}/{total}", "per_prompt": per_prompt}


def check(report: dict[str, Any], thresholds: QualityThresholds) -> None:
    """Raise `QualityGateError` naming each breached threshold of a `report` (see `llm._quality_report`)."""
    breaches = []
    limit = report["perplexity_fp32"] * (1 + thresholds.max_perplexity_increase)
    if report["perplexity"] > limit:
        breaches.append(
            f"perplexity {report['perplexity']:.3f} > {limit:.3f} (fp32 {report['perplexity_fp32']:.3f} "
            f"+ {thresholds.max_perplexity_increase:.0%}; --max-perplexity-increase)"
        )
    if report["greedy_agreement"] < thresholds.min_greedy_agreement:
        breaches.append(
            f"greedy agreement with fp32 {report['greedy_agreement']:.0%} < {thresholds.min_greedy_agreement:.0%} "
            "(--min-greedy-agreement)"
        )
    if breaches:
        raise QualityGateError("quantized export failed its quality gate: " + "; ".join(breaches))


def thresholds_dict(thresholds: QualityThresholds) -> dict[str, float]:
    return asdict(thresholds)


def _kv_buffers(spec: dict[str, Any], capacity: int) -> dict[tuple[str, str], np.ndarray]:
    shape = (1, spec["num_kv_heads"], capacity, spec["head_dim"])
    return {
        (f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}"): np.zeros(shape, np.float32)
        for layer in range(spec["num_layers"]) for kind in ("key", "value")
    }


def _run(session: Any, buffers: dict[tuple[str, str], np.ndarray], ids: np.ndarray, total: int) -> np.ndarray:
    binding = session.io_binding()
    binding.bind_cpu_input("input_ids", ids)
    binding.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
    binding.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
    for (past, present), buffer in buffers.items():
        binding.bind_input(past, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
        binding.bind_output(present, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
    binding.bind_output("logits", "cpu")  # bound last: the last output
    session.run_with_iobinding(binding)
    return binding.get_outputs()[-1].numpy()


def _all_logits(session: Any, spec: dict[str, Any], ids: list[int]) -> np.ndarray:
    return _run(session, _kv_buffers(spec, len(ids)), np.array([ids], np.int64), len(ids))


def _greedy(session: Any, spec: dict[str, Any], prompt_ids: list[int], max_new: int) -> list[int]:
    buffers = _kv_buffers(spec, len(prompt_ids) + max_new)
    ids, total = np.array([prompt_ids], np.int64), len(prompt_ids)
    generated: list[int] = []
    for _ in range(max_new):
        logits = _run(session, buffers, ids, total)
        token = int(np.argmax(logits[0, -1, : spec["vocab_size"]]))
        generated.append(token)
        if token in spec["eos_token_ids"]:
            break
        ids, total = np.array([[token]], np.int64), total + 1
    return generated
