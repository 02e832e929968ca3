"""The identifier tokenizer (code_terms) and BM25 findability of identifiers in any spelling."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bootstrap
from codeintel import demo, errors
from tests.eval_support import load_query_set
from tests.test_ingest import make_repo
from udfs.explain import code_terms, identifier_terms


@pytest.mark.parametrize(("identifier", "terms"), [
    ("parse_v2", ("parse_v2", "parse", "v2", "v", "2")),
    ("HTTPServer", ("httpserver", "http", "server")),
    ("camelCaseName", ("camelcasename", "camel", "case", "name")),
    ("snake_case_name", ("snake_case_name", "snake", "case", "name")),
    ("getHTTPResponse2", ("gethttpresponse2", "get", "http", "response", "2")),
    ("MAX_RETRIES", ("max_retries", "max", "retries")),
    ("__init__", ("__init__", "init")),
    ("x", ("x",)),
    ("404", ("404",)),
])
def test_identifier_terms(identifier: str, terms: tuple[str, ...]) -> None:
    assert identifier_terms(identifier) == terms


def test_code_terms_keeps_one_set_per_occurrence() -> None:
    assert code_terms("self.parse_v2(self)") == "self parse_v2 parse v2 v 2 self"


words = st.lists(st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=8), min_size=1, max_size=4)


@given(words)
def test_every_word_of_a_spelling_is_a_term(parts: list[str]) -> None:
    spellings = [
        "_".join(parts),
        "_".join(parts).upper(),
        parts[0] + "".join(part.capitalize() for part in parts[1:]),
        "".join(part.capitalize() for part in parts),
    ]
    for spelling in spellings:
        terms = identifier_terms(spelling)
        assert terms[0] == spelling.lower()
        assert set(parts) <= set(terms), spelling


REPO = {
    "lib/parsers.py": (
        "def parse_v2(text):\n    return text.split()\n\n\n"
        "def snake_case_name(value):\n    return value.lower()\n\n\n"
        "class HTTPServer:\n    def serve(self):\n        return None\n\n\n"
        "def camelCaseHelper(item):\n    return item\n"
    ),
    "lib/other.py": (
        "def read_file(path):\n    return open(path).read()\n\n\n"
        "def write_file(path, data):\n    open(path, 'w').write(data)\n"
    ),
}


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = tmp_path_factory.mktemp("identifiers")
    catalog = root / "catalog"
    # A small budget gives each definition a chunk of its own.
    bootstrap.ingest(make_repo(root / "repo", REPO), catalog, max_chunk_chars=60)
    connection = bootstrap.connect(catalog)
    demo.build_bm25_index(connection)
    yield connection
    connection.close()


def store_dimension(connection) -> int:
    return connection.execute("SELECT len(embedding) FROM chunks LIMIT 1").fetchone()[0]


@pytest.mark.parametrize(("query", "symbol"), [
    ("parse_v2", "parse_v2"),
    ("parse v2", "parse_v2"),
    ("v2", "parse_v2"),
    ("snake_case_name", "snake_case_name"),
    ("snake case", "snake_case_name"),
    ("camelCaseHelper", "camelCaseHelper"),
    ("camel case helper", "camelCaseHelper"),
    ("HTTPServer", "HTTPServer"),
    ("http server", "HTTPServer"),
    ("httpserver", "HTTPServer"),
])
def test_bm25_finds_an_identifier_in_any_spelling(connection, tmp_path: Path, query: str, symbol: str) -> None:
    zeros = [0.0] * store_dimension(connection)
    load_query_set(connection, tmp_path, [{"query_id": "q", "text": query, "embedding": zeros}])
    best = connection.execute("SELECT c.symbols FROM channel_bm25(k := 1) AS b JOIN chunks AS c ON c.id = b.chunk_id"
                              ).fetchone()
    assert best is not None and symbol in best[0]


def test_bm25_scores_equal_fts_match_bm25(connection, tmp_path: Path) -> None:
    texts = ["read the file at path", "parse text", "HTTP server serve", "write data to a file"]
    zeros = [0.0] * store_dimension(connection)
    load_query_set(connection, tmp_path, [{"query_id": f"q{i}", "text": text, "embedding": zeros}
                                          for i, text in enumerate(texts)])
    pairs = connection.execute(
        "SELECT b.score, fts_main_bm25_documents.match_bm25(b.chunk_id, code_terms(q.text)) "
        "FROM channel_bm25(k := 100) AS b JOIN queries AS q USING (query_id)").fetchall()
    assert len(pairs) > len(texts)
    assert [ours for ours, _ in pairs] == pytest.approx([theirs for _, theirs in pairs], rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("repeats", [0, 3])
def test_bm25_documents_repeat_each_chunks_names(connection, repeats: int) -> None:
    demo.build_bm25_index(connection, repeats)
    try:
        rows = connection.execute(
            "SELECT c.uri, c.content, c.symbols, d.terms FROM chunks AS c JOIN bm25_documents AS d ON d.chunk_id = c.id"
        ).fetchall()
        assert rows
        for uri, content, symbols, terms in rows:
            # Oracle: the terms of the path and text, then of the names, once per repeat.
            names = " ".join(code_terms(symbol) for symbol in symbols)
            expected = " ".join(filter(None, [code_terms(uri + "\n" + content), *[names] * repeats]))
            assert terms == expected
    finally:
        demo.build_bm25_index(connection)


def test_bm25_symbol_repeats_out_of_range_is_refused(connection) -> None:
    with pytest.raises(errors.CatalogError, match=r"symbol_repeats must be between 0 and 1000, got -1"):
        demo.build_bm25_index(connection, -1)
