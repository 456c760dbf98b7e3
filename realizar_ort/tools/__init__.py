"""Tools: tool definitions, how a model is prompted with them, and generation whose calls are valid.

Owns ``ToolDefinition`` / ``ToolCall`` / ``ToolChoice`` (``definitions``), the prompt strategies -
``TemplateToolStrategy`` (the model's own chat template, when ``template_tools.probe_template`` finds it
renders tools) and our own ``Llama3ToolStrategy`` / ``ChatMLToolStrategy`` (``prompts``) -,
``HybridSampler`` (free text until a call starts, then the call grammar), call parsing (``parsing``)
and ``generate_with_tools`` / ``render_tool_prompt`` (``generate``).

May import: ``generation`` and ``grammar`` (it joins the two), ``realizar_ort.kernels`` and the shared
core. Never ``embeddings``.

Start reading at ``generate.py``, then ``hybrid_sampler.py``.
"""
