"""Generation: the decode loop and everything a request passes through on its way to tokens.

Owns ``ModelEngine`` (the thread-safe public face), the continuous-batching ``Scheduler``, the decoders
over the two KV layouts (``decoder_inplace``: fused graph, one KV slot per row; ``decoder_padded``: the
Optimum concat graph), the KV buffers (``kv_slots``, ``kv_cache``), sampling, the streaming detokenizer,
the result types and the ``LogitProcessor`` hook.

May import: the shared core (``realizar_ort.config``, ``errors``, ``manifest``, ``onnx_session``,
``tokenizer``, ``chat_template``). Never ``grammar`` or ``embeddings``; ``tools`` only lazily, from the
``ModelEngine.generate_with_tools*`` convenience methods.

Start reading at ``engine.py``, then ``scheduler.py`` (one step: admit, prefill, decode, sample, deliver).
"""
