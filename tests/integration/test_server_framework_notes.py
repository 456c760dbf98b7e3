"""The README's notes for client frameworks, checked against the live server.

LangChain's ``OpenAIEmbeddings`` (with the default ``check_embedding_ctx_length=True``) sends token ids of an
OpenAI tokenizer instead of text; our embedder reads ids in its own vocabulary, so such ids embed other
words. Shown here with ids of another real tokenizer (Llama 3.2's) against ids of MiniLM's own.
"""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

pytestmark = pytest.mark.slow

EMB = "all-minilm-l6-v2"
TEXT = "The cat sat quietly on the warm mat."


def _vector(client, value) -> np.ndarray:
    v = np.array(client.embeddings.create(model=EMB, input=value).data[0].embedding)
    return v / np.linalg.norm(v)


def test_token_ids_from_another_vocabulary_embed_other_words(client, minilm_dir, llama3_tokenizer_json):
    text = _vector(client, TEXT)
    own = Tokenizer.from_file(str(minilm_dir / "tokenizer.json")).encode(TEXT, add_special_tokens=False).ids
    assert float(text @ _vector(client, own)) == pytest.approx(1.0, abs=1e-4)  # its own ids: the same vector
    foreign = Tokenizer.from_file(str(llama3_tokenizer_json)).encode(TEXT, add_special_tokens=False).ids
    foreign = [i for i in foreign if i < 30522]  # ids MiniLM's vocabulary has at all
    assert float(text @ _vector(client, foreign)) < 0.8  # what LangChain's default would get
