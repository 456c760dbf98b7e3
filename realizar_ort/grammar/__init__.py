"""Grammar: JSON Schema -> a byte automaton -> per-token masks, so output is valid by construction.

Owns the schema compiler (``json_schema`` is its entry; ``compiler`` walks the keywords with
``strings``, ``numbers``, ``regex``, ``composition``, ``conditions`` (``not``/``if``/overlapping ``oneOf``
rewritten exactly) and ``refs`` (``$id``/``$anchor`` to root pointers); ``automaton`` builds the DFA), the tokenizer's
byte tables (``vocab``), the mask cache, and the public ``JsonGrammar`` / ``CompiledGrammar`` /
``GrammarMatcher`` / ``compile_json_schema`` in ``matcher``.

May import: ``realizar_ort.kernels`` (the numba mask kernels) and the shared core (``tokenizer``).
Never ``generation``, ``tools`` or ``embeddings``: a grammar is a ``LogitProcessor`` by shape, not by
import.

Start reading at ``matcher.py`` (compile once per schema and tokenizer, one cheap matcher per request),
then ``json_schema.py``.
"""
