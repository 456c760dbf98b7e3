"""Embeddings: sentence vectors from an exported embedder, in process or as a batch job.

Owns ``EmbeddingEngine`` (``engine``: batching, pooling as the model's config says), the local batch job
behind ``realizar-ort embed`` (``batch``) and its Ray Data variant (``ray_job``); what both jobs share
lives in ``records`` (reading the input) and ``job`` (records, specs, committing a chunk), so neither
imports the other's internals.

May import: the shared core (``config``, ``manifest``, ``onnx_session``). Never ``generation``,
``grammar`` or ``tools``. pyarrow, tqdm and ray are imported only when a job runs.

Start reading at ``engine.py``.
"""
