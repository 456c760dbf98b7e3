"""Export a Llama-architecture chat model to ONNX with KV-cache inputs/outputs, plus its manifest.

Stages: load (HF folder, GGUF, or the built-in tiny Llama 3) -> fix special tokens -> ONNX graph ->
parity with transformers' greedy tokens -> (optional) quantized weights (MatMulNBits) with a quality gate
-> manifest.

Two graphs (``graph=``):
- ``"fused"`` (default): built from the weights by :mod:`.llama_graph` with onnxruntime's fused ops
  (GroupQueryAttention writing the KV cache in place, skip-RMSNorm); ``kv_layout = "shared_buffer"``.
  Llama architecture only; a model it cannot build (e.g. attention biases) falls back to Optimum, said so.
- ``"optimum"``: Optimum's ``text-generation-with-past`` export, rewritten to last-position logits
  (``kv_layout = "concat"``); optionally with onnxruntime's skip-RMSNorm/rotary fusion (``optimize_graph``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from realizar_ort.manifest import MANIFEST_FILE, LlmSpec, Manifest

from . import cache, graph_fusion, llama_graph, onnx_graph, quality, quiet, verify
from .progress import Stages
from .quantize import QuantError, QuantOptions, for_level, quality_report, quantize_weights, summary
from .sources import ResolvedSource, resolve_source

__all__ = ["export_llm"]

ChatFormat = Literal["llama3", "chatml"]
GraphKind = Literal["fused", "optimum"]
_TEMPLATES = Path(__file__).resolve().parent.parent / "realizar_ort" / "templates"

# The tokens that end an assistant turn, per chat format (looked up in the tokenizer, never as ids).
_TURN_END = {"llama3": ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"), "chatml": ("<|im_end|>", "<|endoftext|>")}


def export_llm(
    source: str,
    out: Path,
    *,
    chat_format: ChatFormat | None = None,
    quantize: QuantOptions | None = None,
    graph: GraphKind = "fused",
    optimize_graph: bool = False,
    force: bool = False,
) -> Manifest:
    """Export `source` to `out`; with `quantize`, linear layers become MatMulNBits and the export must pass
    the quality gate (`quality.QualityGateError` otherwise, and `out` is left untouched)."""
    if optimize_graph and graph != "optimum":
        raise ValueError("--optimize-graph applies to --graph optimum only (the fused graph is fused already)")
    if quantize is not None and graph != "fused":
        raise QuantError("--quantize needs the fused graph (--graph fused, the default)")
    stages = Stages(f"export llm {source} -> {out}")
    resolved = resolve_source(source)
    if quantize is not None and quantize.method == "gguf" and resolved.kind != "gguf":
        raise QuantError(f"--quantize gguf keeps a GGUF file's own blocks, but {source} is not a .gguf file: "
                         "use --quantize int4 or int8")
    variant = quantize.cache_variant() if quantize else "fp32"
    key = cache.key(resolved.sha256, f"{variant}|{graph}" + ("+fused" if optimize_graph else ""))
    if not force:
        done = cache.up_to_date(out, key) or cache.restore(out, key)
        if done is not None:
            stages.note(f"up to date ({done})")
            return Manifest.from_dict(json.loads((out / MANIFEST_FILE).read_text()))
    with tempfile.TemporaryDirectory(prefix="realizar-export-") as tmp:
        work = Path(tmp)
        with stages("load weights and tokenizer"):
            hf_dir, fmt = _prepare_hf_folder(resolved, work / "hf", chat_format)
        graph_note, weights = None, None
        if graph == "fused":
            with stages("fused onnx graph (GroupQueryAttention, KV written in place)"):
                weights, graph_note = _fused_export(hf_dir, work / "onnx")
            if graph_note is not None:
                if quantize is not None:
                    raise QuantError(f"--quantize needs the fused graph, which this model cannot use: {graph_note}")
                stages.note(f"fused graph refused ({graph_note}); falling back to the Optimum graph")
                graph = "optimum"
        if graph == "optimum":
            with stages("optimum onnx export (text-generation-with-past)"):
                _optimum_export(hf_dir, work / "onnx")
            with stages("keep last-position logits only"):
                onnx_graph.keep_last_position_logits(work / "onnx" / "model.onnx")
        staging = work / "out"
        staging.mkdir()
        with stages("write model folder"):
            spec = _write_folder(hf_dir, work / "onnx", staging, fmt)
            spec.update(_GRAPH_IO[graph])
        fused_ops = None
        if optimize_graph:
            with stages("onnxruntime graph fusion (skip-RMSNorm, rotary)"):
                fused_ops = graph_fusion.fuse_llm_graph(
                    staging / "model.onnx", num_heads=spec["num_heads"], hidden_size=spec["hidden_size"]
                )
        with stages("parity: onnxruntime greedy == transformers greedy"):
            parity = verify.llm_greedy_parity(hf_dir, staging, spec)
        quant_section = None
        if quantize is not None and weights is not None:
            with stages(f"quantize ({quantize.method}) to MatMulNBits blocks"):
                gguf_path = resolved.path if resolved.kind == "gguf" else None
                candidates, kept = quantize_weights(weights, quantize, resolved.kind, gguf_path)
                chosen, dropped = for_level(candidates, quantize.accuracy_level)
                weights.quantized, weights.accuracy_level = chosen, quantize.accuracy_level
                quant_section = summary(weights, quantize, {**kept, **dropped})
            with stages("quality gate: perplexity on eval_prose.txt, greedy agreement with fp32 (levels 0 and 4)"):
                quant_section["quality"] = quality_report(weights, candidates, spec, staging, quantize)
            with stages("write the quantized graph"):
                for name in ("model.onnx", "model.onnx_data"):
                    (staging / name).unlink(missing_ok=True)
                llama_graph.build_fused_llama_graph(weights, staging / "model.onnx")
        inputs, outputs = onnx_graph.io_specs(staging / "model.onnx")
        manifest = Manifest(
            kind="llm",
            name=out.name,
            onnx_file="model.onnx",
            tokenizer_file="tokenizer.json",
            chat_template_file="chat_template.jinja",
            inputs=tuple(inputs),  # type: ignore[arg-type]
            outputs=tuple(outputs),  # type: ignore[arg-type]
            dtype=quantize.method if quantize else "float32",
            special_tokens=spec.pop("special_tokens"),
            source={"kind": resolved.kind, "spec": resolved.spec, "path": str(resolved.path), "sha256": resolved.sha256},
            exporter=verify.exporter_versions(),
            verification={
                "passed": parity["passed"], "cache_key": key, **parity, "graph": graph,
                **({"fused_graph_refused": graph_note} if graph_note else {}),
                **({"graph_fusion": fused_ops} if fused_ops else {}),
            },
            llm=LlmSpec(**spec),
            quantization=quant_section,
        )
        manifest = Manifest.from_dict(manifest.to_dict())  # normalise tensor specs
        manifest.write(staging)
        if not parity["passed"]:
            raise RuntimeError(f"export parity check FAILED for {source}: {parity['mismatches']}")
        if quant_section is not None and quantize is not None:
            quality.check(quant_section["quality"], quantize.thresholds)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)
    cache.store(out, key)
    stages.note("done")
    return manifest


# ---- stages ---------------------------------------------------------------------------------------------


@quiet.false_alarms_silenced()
def _prepare_hf_folder(src: ResolvedSource, dest: Path, chat_format: ChatFormat | None) -> tuple[Path, ChatFormat]:
    """Materialise a transformers folder with corrected special tokens and a chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if src.kind == "hf":
        tokenizer = AutoTokenizer.from_pretrained(src.path)
        model = None
    elif src.kind == "gguf":
        tokenizer = AutoTokenizer.from_pretrained(src.path.parent, gguf_file=src.path.name)
        model = AutoModelForCausalLM.from_pretrained(src.path.parent, gguf_file=src.path.name, dtype=torch.float32)
    else:
        tokenizer, model = _tiny_llama3(src.path)

    fmt = chat_format or _detect_chat_format(tokenizer)
    turn_end = [t for t in _TURN_END[fmt] if tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id)]
    if not turn_end:
        raise RuntimeError(f"tokenizer has none of the {fmt} turn-end tokens {_TURN_END[fmt]}")
    # GGUF conversion gets these wrong (SmolLM2: eos <|im_start|>, bos prepended to every encode).
    tokenizer.eos_token = turn_end[0]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = turn_end[0]
    if fmt == "chatml" and hasattr(tokenizer, "add_bos_token"):
        tokenizer.add_bos_token = False  # ChatML templates spell out <|im_start|> themselves
    if not tokenizer.chat_template:
        template = _TEMPLATES / f"{fmt}.jinja"
        if not template.is_file():
            raise RuntimeError(f"{src.spec} has no chat template and {template} is missing")
        tokenizer.chat_template = template.read_text(encoding="utf-8")

    dest.mkdir(parents=True)
    if model is None:
        for item in src.path.iterdir():  # link config and weights only; tokenizer files are rewritten
            weights = item.suffix in (".safetensors", ".bin") or item.name.endswith(".index.json")
            if item.is_file() and (weights or item.name in ("config.json", "generation_config.json")):
                (dest / item.name).symlink_to(item)
    else:
        model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in turn_end]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / "realizar_chat_format").write_text(fmt)
    return dest, fmt


def _detect_chat_format(tokenizer: Any) -> ChatFormat:
    vocab = tokenizer.get_vocab()
    if "<|start_header_id|>" in vocab and "<|eot_id|>" in vocab:
        return "llama3"
    if "<|im_start|>" in vocab and "<|im_end|>" in vocab:
        return "chatml"
    raise RuntimeError("cannot tell the model's chat format from its tokenizer: pass --chat-format llama3|chatml")


def _tiny_llama3(tokenizer_dir: Path) -> tuple[Any, Any]:
    """A 2-layer random-weight Llama at the real Llama 3.2 vocabulary: the fast Llama 3 test model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_dir / "tokenizer.json"),
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=131072,
    )
    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        initializer_range=1.0,  # large weights: greedy output varies with the prompt
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in _TURN_END["llama3"]],
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config).eval()
    return tokenizer, model


# The LlmSpec fields that differ between the two graphs.
_GRAPH_IO: dict[str, dict[str, Any]] = {
    "fused": {
        "kv_layout": "shared_buffer", "attention_mask_name": None, "position_ids_name": None,
        "seqlens_k_name": "seqlens_k", "total_sequence_length_name": "total_sequence_length",
    },
    "optimum": {"kv_layout": "concat"},
}


@quiet.false_alarms_silenced()
def _fused_export(hf_dir: Path, out: Path) -> tuple[llama_graph.LlamaWeights | None, str | None]:
    """Build the fused graph into ``out/model.onnx``: ``(weights, None)``, or ``(None, why not)`` when the
    model needs the Optimum graph."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    try:
        weights = llama_graph.llama_weights_from_model(model)
    except llama_graph.FusedGraphError as exc:
        return None, str(exc)
    out.mkdir(parents=True)
    llama_graph.build_fused_llama_graph(weights, out / "model.onnx")
    return weights, None


@quiet.false_alarms_silenced()
def _optimum_export(hf_dir: Path, out: Path) -> None:
    from optimum.exporters.onnx import main_export

    main_export(
        str(hf_dir), output=str(out), task="text-generation-with-past", device="cpu", do_validation=False,
    )


@quiet.false_alarms_silenced()
def _write_folder(hf_dir: Path, onnx_dir: Path, out: Path, fmt: ChatFormat) -> dict[str, Any]:
    """Copy model + tokenizer + template into ``out``; return the ``LlmSpec`` fields (+ special tokens)."""
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoTokenizer

    shutil.copy(onnx_dir / "model.onnx", out / "model.onnx")
    data = onnx_dir / "model.onnx_data"
    if data.exists():
        shutil.copy(data, out / data.name)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    shutil.copy(hf_dir / "tokenizer.json", out / "tokenizer.json")
    (out / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    config = AutoConfig.from_pretrained(hf_dir)
    gen_path = hf_dir / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.exists() else {}

    fast = Tokenizer.from_file(str(out / "tokenizer.json"))
    special = {t.content: i for i, t in fast.get_added_tokens_decoder().items() if t.special}
    turn_end = [special[t] for t in _TURN_END[fmt] if t in special]
    gen_eos = generation.get("eos_token_id", [])
    eos_ids = tuple(dict.fromkeys(turn_end + (gen_eos if isinstance(gen_eos, list) else [gen_eos])))
    probe = fast.encode("hello", add_special_tokens=True).ids
    add_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    defaults = {k: generation[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty") if k in generation}
    return {
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "num_kv_heads": config.num_key_value_heads,
        "head_dim": head_dim,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "tokenizer_vocab_size": fast.get_vocab_size(with_added_tokens=True),
        "context_length": config.max_position_embeddings,
        "eos_token_ids": eos_ids,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "add_bos_token": add_bos,
        "chat_format": fmt,
        "generation_defaults": defaults,
        "special_tokens": special,
    }
