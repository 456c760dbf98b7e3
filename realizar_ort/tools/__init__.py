"""Tools: tool definitions, how a model is prompted with them, and generation whose calls are valid.

Owns ``ToolDefinition`` / ``ToolCall`` / ``ToolChoice`` (``definitions``), the per-format prompt
strategies ``Llama3ToolStrategy`` / ``ChatMLToolStrategy`` (``prompts``), ``HybridSampler`` (free text until
a call starts, then the call grammar), call parsing (``parsing``) and ``generate_with_tools`` (``generate``).

May import: ``generation`` and ``grammar`` (it joins the two), ``realizar_ort.kernels`` and the shared
core. Never ``embeddings``.

Start reading at ``generate.py``, then ``hybrid_sampler.py``.
"""
