/* A docstring-to-function query set with known answers, from the Python files of the store:
   each distinct first sentence of a function's docstring is a query, and the function is its
   answer: the chunk holding its def line with grade 2, the other chunks of its body with
   grade 1.  Judgments are by uri and line range, so they survive re-chunking.

   The store's code still holds the docstrings, which flatters every channel (the query's
   words are in the answer); to measure fairly, ingest a copy of the repository with the
   docstrings blanked out, keeping line numbers (bench/bench_eval.py does), and pass the
   original repository here.

   Parameters:
     repo_root   the directory the store was ingested from, ending in '/' (required)
     min_words   shortest first sentence kept as a query (default 4: "Constructor." says nothing)
     name        query-set name (default 'docstring'): writes querysets/<name>_queries.parquet
                 and querysets/<name>_qrels.parquet under the catalog, for sql/load_queries.sql
     python bootstrap.py sql sql/export_docstring_queries.sql --catalog DIR --param repo_root=/src/repo/ */

SET VARIABLE docstring_repo_root = getvariable('repo_root')::VARCHAR;
SET VARIABLE docstring_min_words = coalesce(getvariable('min_words'), 4);
SET VARIABLE docstring_set_name = coalesce(getvariable('name'), 'docstring');
-- Parameters are reset once read: DuckDB variables outlive the script.
RESET VARIABLE repo_root;
RESET VARIABLE min_words;
RESET VARIABLE name;

SELECT CASE
    WHEN getvariable('docstring_repo_root') IS NULL OR NOT ends_with(getvariable('docstring_repo_root'), '/')
        THEN error('export_docstring_queries.sql: set repo_root to the directory the store was ingested from, '
                   || 'ending in /, got ' || coalesce(getvariable('docstring_repo_root'), 'nothing'))
END AS checked;

SET VARIABLE docstring_sources = (
    SELECT list(getvariable('docstring_repo_root') || f.uri ORDER BY f.uri)
    FROM files AS f
    WHERE f.language = 'python' AND f.status = 'chunked'
);

CREATE OR REPLACE TEMP TABLE docstring_functions AS
SELECT
    s.uri AS uri,
    s.documented.symbol AS symbol,
    s.documented.def_line AS def_line,
    s.documented.end_line AS end_line,
    s.documented.summary AS summary
FROM (
    SELECT
        substr(t.filename, length(getvariable('docstring_repo_root')) + 1) AS uri,
        unnest(python_docstrings(t.content)) AS documented
    FROM read_text(getvariable('docstring_sources')) AS t
) AS s
WHERE len(string_split(s.documented.summary, ' ')) >= getvariable('docstring_min_words');

-- One query per distinct sentence: functions documented alike all answer it.
CREATE OR REPLACE TEMP TABLE docstring_queries AS
SELECT 'doc-' || left(md5(d.summary), 12) AS query_id, d.summary AS text
FROM docstring_functions AS d
GROUP BY d.summary;

CREATE OR REPLACE TEMP TABLE docstring_qrels AS
SELECT
    'doc-' || left(md5(d.summary), 12) AS query_id,
    d.uri AS uri,
    j.start_line AS start_line,
    j.end_line AS end_line,
    j.grade AS grade
FROM docstring_functions AS d
CROSS JOIN LATERAL (
    VALUES (d.def_line, d.def_line, 2), (d.def_line, d.end_line, 1)
) AS j(start_line, end_line, grade);

SET VARIABLE docstring_queries_file = catalog_output_path(
    'querysets/' || getvariable('docstring_set_name') || '_queries.parquet', true);
SET VARIABLE docstring_qrels_file = catalog_output_path(
    'querysets/' || getvariable('docstring_set_name') || '_qrels.parquet', true);
COPY (SELECT * FROM docstring_queries ORDER BY query_id) TO (getvariable('docstring_queries_file'))
    (FORMAT parquet, COMPRESSION zstd);
COPY (SELECT * FROM docstring_qrels ORDER BY query_id, uri, start_line, grade DESC)
    TO (getvariable('docstring_qrels_file')) (FORMAT parquet, COMPRESSION zstd);

SELECT
    getvariable('docstring_queries_file') AS queries_file,
    getvariable('docstring_qrels_file') AS qrels_file,
    (SELECT count(*) FROM docstring_queries)::BIGINT AS queries,
    (SELECT count(*) FROM docstring_functions)::BIGINT AS functions;
