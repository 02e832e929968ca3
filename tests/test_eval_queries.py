"""Query sets: sql/load_queries.sql (files, embeddings, qrels resolution) and docstring queries."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import bootstrap
from codeintel import errors, layout, sqlfiles
from codeintel.chunk_locations import apply_catalog_objects
from tests.eval_support import load_query_set
from tests.test_ingest import make_repo
from udfs.evaluation import docstring_functions, first_sentence

LOAD_QUERIES = layout.SQL_DIR / "load_queries.sql"
# Chunks 0 to 3 of pkg_a/mod_0.py in the synthetic store span lines 1-2, 3-4, 5-6, 7-8.
FILE = "pkg_a/mod_0.py"


@pytest.fixture
def connection(synthetic_catalog: Path) -> duckdb.DuckDBPyConnection:
    connection = bootstrap.connect(synthetic_catalog)
    yield connection
    connection.close()


def file_chunks(synthetic_table: pa.Table) -> list[int]:
    return [row["id"] for row in synthetic_table.to_pylist() if row["uri"] == FILE]


def test_csv_queries_are_embedded_and_mirrored(synthetic_catalog: Path, connection, tmp_path: Path) -> None:
    path = tmp_path / "queries.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("query_id", "text"), ("a", "parse a config file"), ("b", "open a socket")])
    summary = sqlfiles.run_script(connection, LOAD_QUERIES, {"queries_path": str(path)}).fetchone()
    assert summary == (2, 2, 0, 0)
    assert connection.execute("SELECT typeof(embedding) FROM queries LIMIT 1").fetchone() == ("FLOAT[384]",)
    assert connection.execute(
        "SELECT max(array_distance(embedding, embed(text))) < 1e-6 FROM queries").fetchone() == (True,)
    mirrored = duckdb.execute("SELECT query_id, text FROM read_parquet(?) ORDER BY query_id",
                              [str(synthetic_catalog / "eval" / "queries.parquet")]).fetchall()
    assert mirrored == [("a", "parse a config file"), ("b", "open a socket")]


def test_jsonl_queries_keep_their_embeddings(connection, tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    vector = [1.0] + [0.0] * 383
    path.write_text(json.dumps({"query_id": 7, "text": None, "embedding": vector}) + "\n")
    assert sqlfiles.run_script(connection, LOAD_QUERIES, {"queries_path": str(path)}).fetchone()[:2] == (1, 0)
    assert connection.execute("SELECT query_id, embedding[1], embedding[2] FROM queries").fetchone() == ("7", 1.0, 0.0)


def test_qrels_by_range_resolve_to_overlapping_chunks(synthetic_table: pa.Table, synthetic_catalog: Path, connection,
                                                      tmp_path: Path) -> None:
    chunks = file_chunks(synthetic_table)
    queries = [{"query_id": q, "text": q, "embedding": [0.0] * 384} for q in ("q1", "q2")]
    qrels = [
        {"query_id": "q1", "uri": FILE, "start_line": 2, "end_line": 3, "grade": 1},  # chunks 0 and 1
        {"query_id": "q1", "chunk_id": chunks[1], "grade": 3},  # chunk 1 again: its best grade wins
        {"query_id": "q2", "uri": FILE, "grade": 1},  # the whole file
        {"query_id": "q2", "uri": "nowhere.py", "start_line": 1, "end_line": 1, "grade": 2},
        {"query_id": "q2", "chunk_id": 12345, "grade": 1},
    ]
    load_query_set(connection, tmp_path, queries, qrels)
    apply_catalog_objects(connection, synthetic_catalog)  # v_qrels_* appear once eval/qrels.parquet exists
    assert connection.execute("SELECT chunk_id, grade FROM v_qrels_chunks WHERE query_id = 'q1' ORDER BY grade"
                              ).fetchall() == [(chunks[0], 1), (chunks[1], 3)]
    q2 = connection.execute("SELECT count(*) FROM v_qrels_chunks WHERE query_id = 'q2' AND chunk_id <> 12345"
                            ).fetchone()
    assert q2 == (len(chunks),)
    assert connection.execute("SELECT query_id, uri, chunk_id FROM v_qrels_unresolved ORDER BY uri NULLS LAST"
                              ).fetchall() == [("q2", "nowhere.py", None), ("q2", None, 12345)]


@pytest.mark.parametrize(("queries", "qrels", "message"), [
    ([{"query_id": "a"}], None, "lacks column\\(s\\) text"),
    ([{"id": "a", "text": "x"}], None, "lacks column\\(s\\) query_id"),
    ([{"query_id": "a", "text": "x"}, {"query_id": "a", "text": "y"}], None, "query_id must be unique .*repeated: a"),
    ([{"query_id": "a", "text": "x", "embedding": [1.0, 0.0]}], None, "has an embedding of dimension 2; the store"),
    ([{"query_id": "a", "text": "x"}], [{"query_id": "b", "chunk_id": 1}], "judges query id.* e\\.g\\. b"),
    ([{"query_id": "a", "text": "x"}], [{"query_id": "a", "grade": 1}], "needs columns query_id and chunk_id or uri"),
    ([{"query_id": "a", "text": "x"}], [{"query_id": "a", "uri": "f.py", "start_line": 5, "end_line": 2}],
     "start_line after end_line"),
])
def test_bad_query_files_are_refused(connection, tmp_path: Path, queries, qrels, message: str) -> None:
    with pytest.raises(errors.CatalogError, match=f"load_queries.sql: .*{message}"):
        load_query_set(connection, tmp_path, queries, qrels)


def test_unknown_file_type_is_refused(connection, tmp_path: Path) -> None:
    (tmp_path / "queries.txt").write_text("query_id,text\n")
    with pytest.raises(errors.CatalogError,
                       match="load_queries.sql: queries_path must name a .parquet, .csv or .jsonl file"):
        sqlfiles.run_script(connection, LOAD_QUERIES, {"queries_path": str(tmp_path / "queries.txt")})


# --------------------------------------------------------------------------- docstring queries


def test_first_sentence() -> None:
    assert first_sentence("Return the value.  More detail follows.") == "Return the value."
    assert first_sentence("Parse\n   a config file\n\nArgs: path") == "Parse a config file"
    assert first_sentence("Version 2.0 of the parser is used") == "Version 2.0 of the parser is used"


def test_docstring_functions_name_methods_and_skip_broken_sources() -> None:
    source = ('class Pool:\n    """A pool."""\n\n    def submit(self, job):\n        """Queue a job for the pool."""\n'
              '        return job\n\n\ndef helper():\n    return 1\n')
    assert docstring_functions(source) == [
        {"symbol": "Pool.submit", "def_line": 4, "end_line": 6, "summary": "Queue a job for the pool."}]
    assert docstring_functions("def broken(:\n") == []


DOCUMENTED = {
    "tools/text.py": (
        "def count_words(text):\n"
        '    """Count the words of a text, split on white space.\n\n    Longer explanation.\n    """\n'
        "    return len(text.split())\n\n\n"
        "def shout(text):\n"
        '    """Loud."""\n'
        "    return text.upper()\n\n\n"
        "def reverse_words(text):\n"
        '    """Reverse the order of the words in a text."""\n'
        "    return ' '.join(reversed(text.split()))\n"
    ),
}


def test_docstring_query_set_answers_each_query_with_its_function(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", DOCUMENTED)
    catalog = tmp_path / "catalog"
    bootstrap.ingest(repo, catalog, max_chunk_chars=60)
    connection = bootstrap.connect(catalog)
    try:
        queries_file, qrels_file, queries, functions = sqlfiles.run_script(
            connection, layout.SQL_DIR / "export_docstring_queries.sql", {"repo_root": str(repo) + "/"}).fetchone()
        # 'Loud.' is too short to be a query.
        assert (queries, functions) == (2, 2)
        sqlfiles.run_script(connection, LOAD_QUERIES, {"queries_path": queries_file, "qrels_path": qrels_file})
        apply_catalog_objects(connection, catalog.resolve())
        answers = connection.execute(
            "SELECT q.text, c.symbols, g.grade FROM v_qrels_chunks AS g JOIN queries AS q USING (query_id) "
            "JOIN chunks AS c ON c.id = g.chunk_id WHERE g.grade = 2 ORDER BY q.text").fetchall()
    finally:
        connection.close()
    assert answers == [("Count the words of a text, split on white space.", ["count_words"], 2),
                       ("Reverse the order of the words in a text.", ["reverse_words"], 2)]
