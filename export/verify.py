"""Post-export checks: the ONNX model must reproduce transformers' greedy tokens.

The prompts (chat, unicode, a ~600-token one, a raw completion) and transformers' greedy continuations are
written to ``golden.json`` in the model folder, so runtime tests compare against them without torch.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np

from realizar_ort.onnx_session import create_session

from . import quiet

__all__ = ["GOLDEN_FILE", "exporter_versions", "golden_prompts", "llm_greedy_parity", "ort_greedy"]

GOLDEN_FILE = "golden.json"
MAX_NEW_TOKENS = 24


def exporter_versions() -> dict[str, str]:
    versions = {}
    for dist in ("realizar-ort", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def golden_prompts() -> list[dict[str, Any]]:
    long_text = " ".join(
        f"Note {i}: the courier left depot {i % 7} at {8 + i % 10}:{(i * 13) % 60:02d} carrying {3 + (i * 5) % 11} parcels."
        for i in range(40)
    )
    return [
        {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
        {
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "Write a haiku about the sea."},
            ]
        },
        {"messages": [{"role": "user", "content": "Say hello in Japanese (こんにちは) and add an emoji 🌍."}]},
        {"messages": [{"role": "user", "content": long_text + "\nHow many notes are there above?"}]},
        {"text": "The three primary colors are"},
    ]


# Chat goldens pin the template's date: Llama 3.1/3.2 templates write "Today Date" from the clock otherwise,
# and a golden rendered on the export day would not match the same render a day later.
GOLDEN_TEMPLATE_KWARGS = {"date_string": "26 Jul 2024"}


def _prompt_ids(tokenizer: Any, prompt: dict[str, Any], add_bos: bool) -> tuple[str, list[int]]:
    if "messages" in prompt:
        text = tokenizer.apply_chat_template(prompt["messages"], add_generation_prompt=True, tokenize=False,
                                             **GOLDEN_TEMPLATE_KWARGS)
        return text, tokenizer(text, add_special_tokens=False).input_ids
    return prompt["text"], tokenizer(prompt["text"], add_special_tokens=add_bos).input_ids


def ort_greedy(session: Any, spec: dict[str, Any], prompt_ids: list[int], max_new: int) -> list[int]:
    """A plain batch-1 greedy loop over the exported graph (independent of the runtime's engine)."""
    if spec.get("kv_layout") == "shared_buffer":
        return _ort_greedy_shared_buffer(session, spec, prompt_ids, max_new)
    kv_shape = (1, spec["num_kv_heads"], 0, spec["head_dim"])
    past = {}
    for layer in range(spec["num_layers"]):
        past[f"past_key_values.{layer}.key"] = np.zeros(kv_shape, np.float32)
        past[f"past_key_values.{layer}.value"] = np.zeros(kv_shape, np.float32)
    ids = np.array([prompt_ids], dtype=np.int64)
    total = len(prompt_ids)
    positions = np.arange(total, dtype=np.int64)[None, :]
    out_names = [o.name for o in session.get_outputs()]
    generated: list[int] = []
    for _ in range(max_new):
        feed = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64), "position_ids": positions, **past}
        outputs = dict(zip(out_names, session.run(None, feed)))
        logits = outputs["logits"]
        assert logits.shape[1] == 1, f"expected last-position logits, got {logits.shape}"
        token = int(np.argmax(logits[0, -1, : spec["vocab_size"]]))
        generated.append(token)
        if token in spec["eos_token_ids"]:
            break
        for layer in range(spec["num_layers"]):
            past[f"past_key_values.{layer}.key"] = outputs[f"present.{layer}.key"]
            past[f"past_key_values.{layer}.value"] = outputs[f"present.{layer}.value"]
        ids = np.array([[token]], dtype=np.int64)
        positions = np.array([[total]], dtype=np.int64)
        total += 1
    return generated


def _ort_greedy_shared_buffer(session: Any, spec: dict[str, Any], prompt_ids: list[int], max_new: int) -> list[int]:
    """The same loop for a fused graph: one KV buffer per tensor bound as both past and present."""
    capacity = len(prompt_ids) + max_new
    kv_shape = (1, spec["num_kv_heads"], capacity, spec["head_dim"])
    buffers = {}
    for layer in range(spec["num_layers"]):
        for kind in ("key", "value"):
            buffers[(f"past_key_values.{layer}.{kind}", f"present.{layer}.{kind}")] = np.zeros(kv_shape, np.float32)
    logits = np.zeros((1, 1, spec["vocab_size"]), np.float32)
    ids, total = np.array([prompt_ids], dtype=np.int64), len(prompt_ids)
    generated: list[int] = []
    for _ in range(max_new):
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("seqlens_k", np.array([total - 1], np.int32))
        binding.bind_cpu_input("total_sequence_length", np.array(total, np.int32))
        for (past, present), buffer in buffers.items():
            binding.bind_input(past, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
            binding.bind_output(present, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
        binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
        session.run_with_iobinding(binding)
        token = int(np.argmax(logits[0, 0, : spec["vocab_size"]]))
        generated.append(token)
        if token in spec["eos_token_ids"]:
            break
        ids, total = np.array([[token]], dtype=np.int64), total + 1
    return generated


@quiet.false_alarms_silenced()
def llm_greedy_parity(hf_dir: Path, folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Greedy tokens from onnxruntime == transformers for every golden prompt; writes golden.json."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    session = create_session(folder / "model.onnx")
    eos = list(spec["eos_token_ids"])
    records, mismatches = [], []
    for prompt in golden_prompts():
        text, ids = _prompt_ids(tokenizer, prompt, spec["add_bos_token"])
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos, pad_token_id=spec["pad_token_id"],
            )
        expected = out[0, len(ids):].tolist()
        got = ort_greedy(session, spec, ids, MAX_NEW_TOKENS)
        if got != expected:
            mismatches.append({"prompt": text[:80], "transformers": expected, "onnxruntime": got})
        kwargs = {"chat_template_kwargs": GOLDEN_TEMPLATE_KWARGS} if "messages" in prompt else {}
        records.append({**prompt, **kwargs, "prompt_text": text, "prompt_ids": ids, "greedy_ids": expected})
    (folder / GOLDEN_FILE).write_text(json.dumps({"max_new_tokens": MAX_NEW_TOKENS, "prompts": records}, ensure_ascii=False))
    longest = max(len(r["prompt_ids"]) for r in records)
    return {"passed": not mismatches, "prompts": len(records), "longest_prompt_tokens": longest, "mismatches": mismatches}
