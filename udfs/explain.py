"""Why a chunk was retrieved: the identifier tokenizer behind BM25, and the pool's explain columns.

Code search queries name identifiers in any spelling: ``parse_v2``, "parse v2",
``HTTPServer``, "http server".  :func:`identifier_terms` turns one identifier into the
terms that make each spelling findable: the identifier lower-cased, its underscore-separated
pieces, and its parts split on case changes and digits (``HTTPServer`` -> ``httpserver``,
``http``, ``server``; ``parse_v2`` -> ``parse_v2``, ``parse``, ``v2``, ``v``, ``2``).
Terms are lower case because matching folds case; the original spelling differs from the
lower-cased form only in case.

SQL surface:

* ``code_terms(text) -> VARCHAR``: the terms of every identifier occurrence, space
  separated, in text order (one set per occurrence, so term frequency counts occurrences).
  ``sql/build_bm25_index.sql`` indexes chunks with it and ``channel_bm25`` tokenizes
  queries with it, so documents and queries are split alike.
* ``explain_symbols(symbols VARCHAR[], query VARCHAR) -> VARCHAR[]``: the symbols whose
  terms meet the query's.
* ``explain_ast_kinds(content, language) -> VARCHAR[]``: the distinct named tree-sitter
  node kinds of the chunk, in order of first appearance (NULL without a grammar).
* ``explain_cst_hits(content, language, query) -> VARCHAR[]``: the concrete tokens of the
  chunk whose terms meet the query's: words of its named tree-sitter leaves (identifiers,
  literals, comments; keywords and punctuation are anonymous leaves and never count), or,
  without a grammar, the words of its lines.

For explanations a query's terms leave out English function words and one-character parts:
"the" or the ``v`` of ``v2`` would otherwise match nearly every chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import textwrap
from collections.abc import Iterable

import pyarrow as pa

from udfs.chunking import GRAMMAR_LANGUAGES, thread_parsers
from udfs.context import CatalogContext
from udfs.registry import UdfSpec

# ASCII only: the fts index keeps [a-z0-9_] (see sql/build_bm25_index.sql).
_WORD = re.compile(r"[A-Za-z0-9_]+")
# An upper-case run before a capitalised word (HTTP|Server), a capitalised or lower-case
# word, a trailing upper-case run, or digits.
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_MIN_EXPLAIN_TERM_CHARS = 2
_EXPLAIN_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "does", "for", "from", "has", "have",
    "if", "in", "into", "is", "it", "its", "no", "not", "of", "on", "or", "so", "than", "that", "the", "their",
    "then", "there", "these", "this", "those", "to", "was", "we", "were", "when", "which", "will", "with", "you",
    "your",
})
_PARSED_CHUNKS_CACHED = 4096


@functools.lru_cache(maxsize=65_536)
def identifier_terms(identifier: str) -> tuple[str, ...]:
    """The identifier lower-cased, then its underscore pieces, then its case/digit parts; distinct."""
    lowered = identifier.lower()
    pieces = [piece.lower() for piece in identifier.split("_") if piece]
    parts = [part.lower() for part in _PART.findall(identifier)]
    return tuple(dict.fromkeys([lowered, *pieces, *parts]))


def code_terms(text: str) -> str:
    """Terms of every identifier occurrence in ``text``, space separated."""
    return " ".join(term for word in _WORD.findall(text) for term in identifier_terms(word))


@functools.lru_cache(maxsize=4096)
def query_match_terms(query: str) -> frozenset[str]:
    """The query's terms that may explain a match: no function words, no one-character parts."""
    return frozenset(
        term
        for word in _WORD.findall(query)
        for term in identifier_terms(word)
        if len(term) >= _MIN_EXPLAIN_TERM_CHARS and term not in _EXPLAIN_STOPWORDS
    )


def matching_words(words: Iterable[str], terms: frozenset[str]) -> list[str]:
    """The distinct words, in order, of which at least one term is in ``terms``."""
    return [word for word in dict.fromkeys(words) if not terms.isdisjoint(identifier_terms(word))]


@dataclasses.dataclass(frozen=True)
class ChunkStructure:
    """What re-parsing a chunk on its own yields: its named node kinds and its leaf words."""

    ast_kinds: tuple[str, ...] | None
    words: tuple[str, ...]


@functools.lru_cache(maxsize=_PARSED_CHUNKS_CACHED)
def chunk_structure(content: str, language: str | None) -> ChunkStructure:
    """Parse ``content`` with its language's grammar; without one, its words only.

    A chunk is a fragment (a method without its class, say), so it is dedented first and
    the root and ERROR nodes, artefacts of parsing it out of context, are left out.
    Cached: a pool names the same chunk for many queries.
    """
    if language not in GRAMMAR_LANGUAGES:
        return ChunkStructure(None, tuple(_WORD.findall(content)))
    source = textwrap.dedent(content).encode()
    root = thread_parsers.parser(language).parse(source).root_node
    kinds: dict[str, None] = {}
    words: list[str] = []
    cursor = root.walk()
    # Pre-order walk with a cursor: chunk trees can nest deeper than Python's recursion limit.
    while True:
        node = cursor.node
        if node is not None and node.is_named and node != root and node.type != "ERROR":
            kinds.setdefault(node.type, None)
            if node.child_count == 0 and node.text is not None:
                words.extend(_WORD.findall(node.text.decode(errors="replace")))
        if cursor.goto_first_child() or cursor.goto_next_sibling():
            continue
        while cursor.goto_parent():
            if cursor.goto_next_sibling():
                break
        else:
            return ChunkStructure(tuple(kinds), tuple(words))


# --------------------------------------------------------------------------- arrow UDFs


def _code_terms_udf(context: CatalogContext, texts: pa.ChunkedArray) -> pa.Array:
    return pa.array([None if text is None else code_terms(text) for text in texts.to_pylist()], pa.string())


def _explain_symbols_udf(context: CatalogContext, symbols: pa.ChunkedArray, queries: pa.ChunkedArray) -> pa.Array:
    rows = [
        None if names is None or query is None else matching_words(names, query_match_terms(query))
        for names, query in zip(symbols.to_pylist(), queries.to_pylist(), strict=True)
    ]
    return pa.array(rows, pa.list_(pa.string()))


def _explain_ast_kinds_udf(context: CatalogContext, contents: pa.ChunkedArray, languages: pa.ChunkedArray) -> pa.Array:
    rows = [
        None if content is None else _list_or_none(chunk_structure(content, language).ast_kinds)
        for content, language in zip(contents.to_pylist(), languages.to_pylist(), strict=True)
    ]
    return pa.array(rows, pa.list_(pa.string()))


def _explain_cst_hits_udf(
    context: CatalogContext, contents: pa.ChunkedArray, languages: pa.ChunkedArray, queries: pa.ChunkedArray
) -> pa.Array:
    rows = [
        None
        if content is None or query is None
        else matching_words(chunk_structure(content, language).words, query_match_terms(query))
        for content, language, query in zip(
            contents.to_pylist(), languages.to_pylist(), queries.to_pylist(), strict=True
        )
    ]
    return pa.array(rows, pa.list_(pa.string()))


def _list_or_none(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


REGISTRY: tuple[UdfSpec, ...] = (
    UdfSpec(
        name="code_terms",
        function=_code_terms_udf,
        parameters=("VARCHAR",),
        return_type="VARCHAR",
        null_handling="special",
        doc="code_terms(text): space-separated lower-case terms of each identifier: itself, its "
        "underscore pieces and its case/digit parts (HTTPServer -> httpserver http server).",
    ),
    UdfSpec(
        name="explain_symbols",
        function=_explain_symbols_udf,
        parameters=("VARCHAR[]", "VARCHAR"),
        return_type="VARCHAR[]",
        null_handling="special",
        doc="explain_symbols(symbols, query): the symbols sharing an identifier term with the query.",
    ),
    UdfSpec(
        name="explain_ast_kinds",
        function=_explain_ast_kinds_udf,
        parameters=("VARCHAR", "VARCHAR"),
        return_type="VARCHAR[]",
        null_handling="special",
        doc="explain_ast_kinds(content, language): distinct named tree-sitter node kinds of the "
        "re-parsed chunk, first appearance first; NULL for a language without a grammar.",
    ),
    UdfSpec(
        name="explain_cst_hits",
        function=_explain_cst_hits_udf,
        parameters=("VARCHAR", "VARCHAR", "VARCHAR"),
        return_type="VARCHAR[]",
        null_handling="special",
        doc="explain_cst_hits(content, language, query): words of the chunk's named tree-sitter "
        "leaves (or of its lines, without a grammar) sharing an identifier term with the query.",
    ),
)
