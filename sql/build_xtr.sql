/* Build the XTR oracle lens: token vectors of a dev split of chunks, and two oracle rankings of that
   split for the queries table, under xtr/ (files described in udfs/xtr.py).  The views
   v_xtr_recall_per_query and v_xtr_recall_per_run and sql/report_xtr.sql read them.  A diagnostic
   of agreement with two model rankings, not ground truth.

   The dev split is every chunk a pooled run returned for a lens query, every chunk judged relevant
   to one, and `sample` more chunks drawn at random.  Why this split:
   * every hit of the runs pooled so far is in it, so comparing a run's top k with an oracle's top k
     of the split is fair: the oracle ranked every chunk the run returned;
   * the drawn chunks are ones no run returned (and no judgment names), so an oracle can rank first
     something every channel missed, which is what recall against it measures;
   * its size, hence the one encoder pass over it, grows with the lens queries and the pool depth,
     not with the store: lens queries x (sum of the runs' k) + judged + sample chunks at most, on a
     store of millions of chunks as on a small one; query_sample bounds it.
   Both draws are seeded and independent of row order and platform: rows in order of
   md5(seed || ':' || id), chunk ids being stable across re-ingests, so the same code is drawn again.
   Runs pooled after the build may return chunks outside the split; those hits count neither way
   (v_xtr_recall_per_query says how many there were): rebuild the lens after pooling new runs.

   Parameters:
     sample        chunks drawn at random besides the pooled and judged ones (default 200)
     query_sample  lens queries drawn from the queries table (default: every query)
     k             depth of both oracle rankings (default 100); a run is compared at min(its k, k)
     seed          seed of both draws (default 0)
     python bootstrap.py xtr --catalog DIR --sample 500 --queries 100
     python bootstrap.py sql sql/build_xtr.sql --catalog DIR --param sample=500 --param query_sample=100

   Returns one row: dev_chunks, dev_tokens, queries (lens queries), xtr_queries (those with text,
   which the late-interaction oracle needs), k, lens_dir, seconds. */

SET VARIABLE xtr_sample = coalesce(getvariable('sample'), 200);
SET VARIABLE xtr_query_sample = getvariable('query_sample');
SET VARIABLE xtr_k = coalesce(getvariable('k'), 100);
SET VARIABLE xtr_seed = coalesce(getvariable('seed'), 0);
-- DuckDB variables last as long as the connection: the parameters are reset once read, so a
-- later build that leaves one out gets its default, not this build's value.
RESET VARIABLE sample;
RESET VARIABLE query_sample;
RESET VARIABLE k;
RESET VARIABLE seed;

SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = 'queries' AND schema_name = 'main')
        THEN error('build_xtr.sql: no queries table; load a query set with sql/load_queries.sql first')
    -- Both views appear when their files exist at connect time: a connection that loaded the
    -- queries or pooled runs after it opened lacks them, and the split would miss their chunks.
    WHEN NOT EXISTS (SELECT 1 FROM duckdb_views() WHERE view_name = 'v_qrels_chunks')
        OR (EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = 'runs' AND schema_name = 'main')
            AND NOT EXISTS (SELECT 1 FROM duckdb_views() WHERE view_name = 'pool'))
        THEN error('build_xtr.sql: views v_qrels_chunks and pool are not on this connection yet (queries or '
                   || 'runs were written after it opened); reconnect, or run `python bootstrap.py xtr --catalog DIR`')
    WHEN getvariable('xtr_sample') IS NULL OR getvariable('xtr_sample') < 0
        THEN error('build_xtr.sql: sample must be at least 0, got ' || getvariable('xtr_sample')
                   || '; it is the number of chunks drawn at random into the dev split')
    WHEN getvariable('xtr_query_sample') < 1
        THEN error('build_xtr.sql: query_sample must be at least 1, got ' || getvariable('xtr_query_sample')
                   || '; leave it out to use every query')
    WHEN getvariable('xtr_k') < 1
        THEN error('build_xtr.sql: k must be at least 1, got ' || getvariable('xtr_k') || '; the default is 100')
END AS checked;

CREATE OR REPLACE TEMP TABLE xtr_lens_queries AS
SELECT q.query_id::VARCHAR AS query_id, q.text::VARCHAR AS text, q.embedding::FLOAT[] AS embedding
FROM queries AS q
ORDER BY md5(getvariable('xtr_seed')::VARCHAR || ':' || q.query_id)
LIMIT getvariable('xtr_query_sample');

SELECT CASE
    WHEN count(*) = 0
        THEN error('build_xtr.sql: the queries table is empty; load a query set with sql/load_queries.sql first')
END AS checked
FROM xtr_lens_queries;

-- The pool view exists once a run has been pooled; read through query() so that a catalog
-- without runs still binds.
SET VARIABLE xtr_pool_query = CASE
    WHEN EXISTS (SELECT 1 FROM duckdb_views() WHERE view_name = 'pool')
        THEN 'SELECT p.query_id AS query_id, p.chunk_id AS chunk_id FROM pool AS p'
    ELSE 'SELECT NULL::VARCHAR AS query_id, NULL::BIGINT AS chunk_id WHERE false'
END;

CREATE OR REPLACE TEMP TABLE xtr_dev_split AS
WITH pooled AS (
    SELECT DISTINCT p.chunk_id AS chunk_id
    FROM query(getvariable('xtr_pool_query')) AS p
    WHERE p.query_id IN (SELECT l.query_id FROM xtr_lens_queries AS l)
),
judged AS (
    SELECT DISTINCT g.chunk_id AS chunk_id
    FROM v_qrels_chunks AS g
    WHERE g.grade > 0 AND g.query_id IN (SELECT l.query_id FROM xtr_lens_queries AS l)
),
sampled AS (
    SELECT c.id AS chunk_id
    FROM chunks AS c
    WHERE NOT EXISTS (SELECT 1 FROM pooled AS p WHERE p.chunk_id = c.id)
        AND NOT EXISTS (SELECT 1 FROM judged AS j WHERE j.chunk_id = c.id)
    ORDER BY md5(getvariable('xtr_seed')::VARCHAR || ':' || c.id::VARCHAR)
    LIMIT getvariable('xtr_sample')
)
SELECT
    c.id::BIGINT AS chunk_id,
    (c.id IN (SELECT p.chunk_id FROM pooled AS p))::BOOLEAN AS pooled,
    (c.id IN (SELECT j.chunk_id FROM judged AS j))::BOOLEAN AS judged,
    (c.id IN (SELECT s.chunk_id FROM sampled AS s))::BOOLEAN AS sampled,
    c.content::VARCHAR AS content,
    c.embedding::FLOAT[] AS embedding
FROM chunks AS c
WHERE c.id IN (SELECT p.chunk_id FROM pooled AS p UNION SELECT j.chunk_id FROM judged AS j
               UNION SELECT s.chunk_id FROM sampled AS s);

SELECT CASE
    WHEN count(*) = 0
        THEN error('build_xtr.sql: the dev split is empty: no run has been pooled and no chunk judged for the '
                   || 'lens queries, and sample is 0 (or the store has no chunks); pool runs with '
                   || 'sql/write_pool.sql or pass sample > 0')
END AS checked
FROM xtr_dev_split;

-- One call over the whole split and query set: the UDF encodes and ranks them together.
CREATE OR REPLACE TEMP TABLE xtr_summary AS
SELECT xtr_build_lens(
    (SELECT list({'chunk_id': d.chunk_id, 'pooled': d.pooled, 'judged': d.judged, 'sampled': d.sampled,
                  'content': d.content, 'embedding': d.embedding} ORDER BY d.chunk_id)
     FROM xtr_dev_split AS d),
    (SELECT list({'query_id': q.query_id, 'text': q.text, 'embedding': q.embedding} ORDER BY q.query_id)
     FROM xtr_lens_queries AS q),
    getvariable('xtr_k')::INTEGER,
    json_object('sample', getvariable('xtr_sample'), 'query_sample', getvariable('xtr_query_sample'),
                'k', getvariable('xtr_k'), 'seed', getvariable('xtr_seed'))::VARCHAR
) AS summary;

SELECT
    s.summary.dev_chunks::BIGINT AS dev_chunks,
    s.summary.dev_tokens::BIGINT AS dev_tokens,
    s.summary.queries::BIGINT AS queries,
    s.summary.xtr_queries::BIGINT AS xtr_queries,
    s.summary.k::INTEGER AS k,
    s.summary.lens_dir::VARCHAR AS lens_dir,
    round(s.summary.seconds, 1)::DOUBLE AS seconds
FROM xtr_summary AS s;
