"""The OpenAI-compatible HTTP server (Starlette + uvicorn + orjson), installed as ``realizar_ort.server``.

``realizar_ort.server.app.create_app(config)`` builds the ASGI app; ``realizar-ort serve`` runs it
(``realizar_ort.server.cli``). Modules: ``protocol`` (request validation: ``protocol_fields``, ``chat_request``, ``chat_messages``,
``chat_schemas``, ``embeddings_request``), ``errors`` (the one error
mapping), ``chat`` / ``chat_format`` / ``sse`` / ``bridge`` (chat completions, streamed or folded),
``json_mode`` (response_format grammars), ``embeddings``, ``models_route``, ``metrics``, ``state``,
``live`` (run the app in a background thread). Kept import-light: nothing is imported here.
"""
