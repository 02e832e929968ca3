/* Load a query set, and optionally its relevance judgments, replacing the current ones.

   Parameters:
     queries_path  .parquet, .csv or .jsonl file with query_id, text and optionally embedding
                   (a list of floats of the store's dimension); queries without an embedding
                   are embedded here with embed(text)
     qrels_path    optional .parquet, .csv or .jsonl file with query_id, grade (integer,
                   default 1; 0 means judged not relevant) and either chunk_id or uri with an
                   optional start_line/end_line range (a range without lines means the whole
                   file); view v_qrels_chunks resolves ranges to the chunks they overlap
     python bootstrap.py sql sql/load_queries.sql --catalog DIR --param queries_path=q.jsonl \
         --param qrels_path=qrels.csv

   Writes tables queries (query_id, text, embedding FLOAT[d]) and qrels, and their copies
   eval/queries.parquet and eval/qrels.parquet (without qrels_path, an empty one) that the
   evaluation views read, so a stock DuckDB client sees them too. */

SET VARIABLE eval_queries_path = getvariable('queries_path')::VARCHAR;
SET VARIABLE eval_qrels_path = getvariable('qrels_path')::VARCHAR;
-- DuckDB variables last as long as the connection: the parameters are reset once read, so
-- a later load without qrels_path loads no judgments rather than this load's.
RESET VARIABLE queries_path;
RESET VARIABLE qrels_path;

SELECT CASE
    WHEN getvariable('eval_queries_path') IS NULL
        THEN error('load_queries.sql: set queries_path to a .parquet, .csv or .jsonl file with columns '
                   || 'query_id, text[, embedding]')
    WHEN NOT EXISTS (SELECT 1 FROM duckdb_views() WHERE view_name = 'chunks')
        THEN error('load_queries.sql: the catalog has no chunk store yet; ingest a repository first')
END AS checked;

SET VARIABLE eval_store_dimension = (SELECT len(c.embedding) FROM chunks AS c LIMIT 1);
SET VARIABLE eval_queries_reader = eval_reader_query('eval_queries_path', 'load_queries.sql: queries_path');
SET VARIABLE eval_qrels_reader = CASE
    WHEN getvariable('eval_qrels_path') IS NULL
        THEN 'SELECT NULL::VARCHAR AS query_id, NULL::BIGINT AS chunk_id WHERE false'
    ELSE eval_reader_query('eval_qrels_path', 'load_queries.sql: qrels_path')
END;

CREATE OR REPLACE TEMP TABLE eval_query_source AS SELECT * FROM query(getvariable('eval_queries_reader'));
CREATE OR REPLACE TEMP TABLE eval_qrels_source AS SELECT * FROM query(getvariable('eval_qrels_reader'));

-- Required columns, named in the error rather than failing later on a NULL.
SELECT CASE
    WHEN len(missing) > 0
        THEN error('load_queries.sql: ' || getvariable('eval_queries_path') || ' lacks column(s) '
                   || array_to_string(missing, ', ') || '; a query file has query_id, text[, embedding]')
END AS checked
FROM (
    SELECT list_filter(['query_id', 'text'], name -> NOT list_contains(columns, name)) AS missing
    FROM (SELECT list(d.column_name) AS columns FROM (DESCRIBE eval_query_source) AS d)
);

SELECT CASE
    WHEN NOT list_contains(columns, 'query_id') OR NOT list_has_any(columns, ['chunk_id', 'uri'])
        THEN error('load_queries.sql: ' || getvariable('eval_qrels_path') || ' needs columns query_id and '
                   || 'chunk_id or uri (with optional start_line, end_line, grade); it has '
                   || array_to_string(columns, ', '))
END AS checked
FROM (SELECT list(d.column_name) AS columns FROM (DESCRIBE eval_qrels_source) AS d);

-- Optional columns come out NULL: the typed empty row set is united with the file by name.
CREATE OR REPLACE TEMP TABLE eval_query_rows AS
SELECT s.query_id::VARCHAR AS query_id, s.text::VARCHAR AS text, s.embedding::FLOAT[] AS embedding
FROM (
    SELECT NULL::VARCHAR AS query_id, NULL::VARCHAR AS text, NULL::FLOAT[] AS embedding WHERE false
    UNION ALL BY NAME
    SELECT * FROM eval_query_source
) AS s;

CREATE OR REPLACE TEMP TABLE eval_qrels_rows AS
SELECT
    s.query_id::VARCHAR AS query_id,
    s.chunk_id::BIGINT AS chunk_id,
    s.uri::VARCHAR AS uri,
    s.start_line::INTEGER AS start_line,
    s.end_line::INTEGER AS end_line,
    coalesce(s.grade, 1)::INTEGER AS grade
FROM (
    SELECT NULL::VARCHAR AS query_id, NULL::BIGINT AS chunk_id, NULL::VARCHAR AS uri, NULL::INTEGER AS start_line,
           NULL::INTEGER AS end_line, NULL::INTEGER AS grade
    WHERE false
    UNION ALL BY NAME
    SELECT * FROM eval_qrels_source
) AS s;

SELECT CASE
    WHEN count(*) FILTER (r.query_id IS NULL) > 0
        THEN error('load_queries.sql: ' || getvariable('eval_queries_path') || ' has rows without a query_id')
    WHEN count(*) > count(DISTINCT r.query_id)
        THEN error('load_queries.sql: query_id must be unique in ' || getvariable('eval_queries_path')
                   || '; repeated: ' || (SELECT string_agg(d.query_id, ', ' ORDER BY d.query_id) FROM (
                       SELECT query_id FROM eval_query_rows GROUP BY query_id HAVING count(*) > 1 LIMIT 5) AS d))
    WHEN count(*) FILTER (r.text IS NULL AND r.embedding IS NULL) > 0
        THEN error('load_queries.sql: query '
                   || any_value(r.query_id) FILTER (r.text IS NULL AND r.embedding IS NULL)
                   || ' has neither text nor embedding')
    WHEN count(*) FILTER (len(r.embedding) <> getvariable('eval_store_dimension')) > 0
        THEN error('load_queries.sql: query '
                   || any_value(r.query_id || ' has an embedding of dimension ' || len(r.embedding))
                      FILTER (len(r.embedding) <> getvariable('eval_store_dimension'))
                   || '; the store''s embeddings have dimension ' || getvariable('eval_store_dimension'))
    -- A nested CASE, so the model is loaded only when some query needs embedding here.
    WHEN count(*) FILTER (r.embedding IS NULL) > 0 THEN CASE
        WHEN len(embed(any_value(r.text) FILTER (r.embedding IS NULL))) <> getvariable('eval_store_dimension')
            THEN error('load_queries.sql: embed() gives vectors of dimension '
                       || len(embed(any_value(r.text) FILTER (r.embedding IS NULL))) || ' but the store''s have '
                       || getvariable('eval_store_dimension') || '; give every query an embedding column made by '
                       || 'the store''s model')
    END
END AS checked
FROM eval_query_rows AS r;

SELECT CASE
    WHEN count(*) FILTER (q.chunk_id IS NULL AND q.uri IS NULL) > 0
        THEN error('load_queries.sql: ' || getvariable('eval_qrels_path')
                   || ' has rows with neither chunk_id nor uri')
    WHEN count(*) FILTER (q.start_line > q.end_line) > 0
        THEN error('load_queries.sql: ' || getvariable('eval_qrels_path')
                   || ' has a range with start_line after end_line, for query '
                   || any_value(q.query_id) FILTER (q.start_line > q.end_line))
    WHEN count(*) FILTER (q.query_id NOT IN (SELECT r.query_id FROM eval_query_rows AS r)) > 0
        THEN error('load_queries.sql: ' || getvariable('eval_qrels_path') || ' judges query id(s) missing from '
                   || getvariable('eval_queries_path') || ', e.g. '
                   || any_value(q.query_id) FILTER (q.query_id NOT IN (SELECT r.query_id FROM eval_query_rows AS r)))
END AS checked
FROM eval_qrels_rows AS q;

-- The embedding column takes its FLOAT[d] type from the chunks view (d cannot come from a variable).
CREATE OR REPLACE TABLE queries AS
SELECT ''::VARCHAR AS query_id, ''::VARCHAR AS text, c.embedding AS embedding
FROM chunks AS c
LIMIT 0;

INSERT INTO queries
SELECT r.query_id, r.text, coalesce(r.embedding, embed(r.text)::FLOAT[])
FROM eval_query_rows AS r
ORDER BY r.query_id;

CREATE OR REPLACE TABLE qrels AS
SELECT q.query_id, q.chunk_id, q.uri, q.start_line, q.end_line, q.grade
FROM eval_qrels_rows AS q
ORDER BY q.query_id, q.chunk_id, q.uri, q.start_line;

COPY queries TO (catalog_output_path('eval/queries.parquet', true)) (FORMAT parquet, COMPRESSION zstd);
COPY qrels TO (catalog_output_path('eval/qrels.parquet', true)) (FORMAT parquet, COMPRESSION zstd);

SELECT
    (SELECT count(*) FROM queries)::BIGINT AS queries,
    (SELECT count(*) FROM eval_query_rows WHERE embedding IS NULL)::BIGINT AS embedded_here,
    (SELECT count(*) FROM qrels)::BIGINT AS judgments,
    (SELECT count(DISTINCT query_id) FROM qrels WHERE grade > 0)::BIGINT AS judged_queries;
