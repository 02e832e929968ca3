/* Measure the hybrid channel's fusion on the loaded query set and save the best point as the
   published FAISS index version's fusion profile (index/versions/<v>/fusion.json), which
   sql/write_pool.sql then uses for hybrid runs by default.

   Parameters:
     k      rows per query of the fused ranking, as write_pool.sql's k (default 10)
     depth  candidates fused per channel, at least k (default 100)
     python bootstrap.py sql sql/tune_fusion.sql --catalog DIR [--param depth=200]

   Needs a query set with judgments (sql/load_queries.sql with qrels_path), the BM25 index
   (`python bootstrap.py bm25 --catalog DIR`) and a published FAISS index.  The whole loaded
   query set is the tuning (dev) set: the queries with a judgment of grade > 0.  Figures
   measured on the set the profile was picked on are optimistic for it; evaluate on other
   queries to report quality.

   Each channel's top `depth` is searched once (channel_faiss, channel_bm25); the fusion of
   channel_hybrid (weight / (rrf_k + rank), summed per chunk; a channel of weight 0 left out;
   ties to the smaller chunk id) is then computed in SQL for every point of the grid
   faiss_weight x bm25_weight in {0, 0.25, 0.5, 1, 2, 4} (not both 0) x rrf_k in {10, 30, 60}:
   105 points.  Each point gets MRR@10, nDCG@10, recall@10 and recall@k as v_eval_per_query
   and v_eval_per_channel define them (judgments resolved as v_qrels_chunks does).  The pick
   is the best MRR@10; among equal ones, the weights closest to equal (ratio nearest 1), then
   rrf_k 60 (else nearest it), then the larger weight nearest 1.  (1, 0) and (0, 1) are grid
   points, so the pick never scores below the better single channel on this set; the script
   checks that, and that a zero-weight point ranks as its channel alone.  The fusion of all
   points took about 7 s per 1,000 judged queries at depth 100 on 2 cores (the searches extra).

   Returns one row: faiss_weight, bm25_weight, rrf_k, depth, mrr_at_10 (the pick's),
   faiss_mrr_at_10, bm25_mrr_at_10 (each channel alone: the first k of its top `depth`, what a
   hybrid run with the other weight 0 returns), queries (judged queries measured) and profile
   (the path of fusion.json).  fusion.json records every grid point's
   figures, the pick, both single channels, k, depth, the query count, the index version and
   store it was measured on, and created_at.  Temp table tune_grid keeps every point's figures
   and its place in the preference order (1: the pick) for a look on the same connection.
   The profile belongs to the index version it was measured on: a rebuilt index starts
   without one (hybrid runs fuse with the defaults) until this script runs again. */

SET VARIABLE tune_k_given = getvariable('k');
SET VARIABLE tune_depth_given = getvariable('depth');
-- DuckDB variables last as long as the connection: the parameters are reset once read, so
-- a later run that leaves one out gets its default, not this run's value.
RESET VARIABLE k;
RESET VARIABLE depth;

-- A parameter from --param may be any JSON value or a string: checked as a number first.
CREATE OR REPLACE TEMP MACRO tune_fusion_count_ok(value) AS coalesce(
    TRY_CAST(value AS DOUBLE) BETWEEN 1 AND 2147483647
    AND TRY_CAST(value AS DOUBLE) = floor(TRY_CAST(value AS DOUBLE)), false);

SELECT CASE
    WHEN getvariable('tune_k_given') IS NOT NULL AND NOT tune_fusion_count_ok(getvariable('tune_k_given'))
        THEN error('tune_fusion.sql: k must be an integer of at least 1, got '
                   || getvariable('tune_k_given')::VARCHAR || '; pass --param k=10, say')
    WHEN getvariable('tune_depth_given') IS NOT NULL AND NOT tune_fusion_count_ok(getvariable('tune_depth_given'))
        THEN error('tune_fusion.sql: depth must be an integer of at least 1, got '
                   || getvariable('tune_depth_given')::VARCHAR || '; pass --param depth=100, say')
END AS checked;

SET VARIABLE tune_k = coalesce(TRY_CAST(getvariable('tune_k_given') AS DOUBLE), 10)::INTEGER;
SET VARIABLE tune_depth = coalesce(TRY_CAST(getvariable('tune_depth_given') AS DOUBLE), 100)::INTEGER;

SELECT CASE
    WHEN getvariable('tune_depth') < getvariable('tune_k')
        THEN error('tune_fusion.sql: depth (candidates fused per channel) must be at least k = '
                   || getvariable('tune_k')::VARCHAR || ', got ' || getvariable('tune_depth')::VARCHAR
                   || '; pass --param depth=' || greatest(100, getvariable('tune_k'))::VARCHAR)
    WHEN NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = 'queries' AND schema_name = 'main')
        THEN error('tune_fusion.sql: no queries table; load a query set with judgments first: '
                   || 'python bootstrap.py sql sql/load_queries.sql --catalog DIR --param queries_path=FILE '
                   || '--param qrels_path=FILE')
    WHEN NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = 'qrels' AND schema_name = 'main')
        THEN error('tune_fusion.sql: no qrels table (relevance judgments); load the query set with '
                   || 'sql/load_queries.sql --param qrels_path=FILE')
    WHEN NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = 'bm25_index_info')
        THEN error('tune_fusion.sql: the hybrid channel needs the BM25 index; build it with '
                   || '`python bootstrap.py bm25 --catalog DIR`')
    WHEN eval_catalog_versions().faiss_version IS NULL
        THEN error('tune_fusion.sql: no FAISS index is published; build one with '
                   || '`python bootstrap.py build --catalog DIR`')
END AS checked;

-- What the profile is measured on, read before the searches; fusion_save refuses to file it
-- under another index version if CURRENT moves meanwhile.
SET VARIABLE tune_versions = eval_catalog_versions();
SET VARIABLE tune_bm25 = (SELECT {'store_version': b.store_version, 'store_fingerprint': b.store_fingerprint}
                          FROM bm25_index_info AS b);

-- Judgments resolved to chunks as views/v_qrels_chunks.sql does (keep the two in step), from
-- the qrels table: the view exists on a connection only once eval/qrels.parquet did when it
-- was opened.  ideal_rank orders a query's relevant chunks for the ideal DCG.
CREATE OR REPLACE TEMP TABLE tune_relevant AS
WITH judged AS (
    SELECT q.query_id AS query_id, q.chunk_id AS chunk_id, q.grade AS grade
    FROM qrels AS q
    WHERE q.chunk_id IS NOT NULL
    UNION ALL
    SELECT q.query_id AS query_id, c.id AS chunk_id, q.grade AS grade
    FROM qrels AS q
    JOIN chunks AS c
        ON c.uri = q.uri
        AND c.start_line <= coalesce(q.end_line, c.end_line)
        AND c.end_line >= coalesce(q.start_line, c.start_line)
    WHERE q.chunk_id IS NULL
),
graded AS (
    SELECT j.query_id::VARCHAR AS query_id, j.chunk_id::BIGINT AS chunk_id, max(j.grade)::INTEGER AS grade
    FROM judged AS j
    GROUP BY j.query_id, j.chunk_id
)
SELECT
    g.query_id AS query_id,
    g.chunk_id AS chunk_id,
    g.grade AS grade,
    row_number() OVER (PARTITION BY g.query_id ORDER BY g.grade DESC, g.chunk_id) AS ideal_rank
FROM graded AS g
WHERE g.grade > 0 AND g.query_id IN (SELECT q.query_id::VARCHAR FROM queries AS q);

CREATE OR REPLACE TEMP TABLE tune_judged AS
SELECT
    r.query_id AS query_id,
    count(*) AS relevant_chunks,
    sum(r.grade / log2(r.ideal_rank + 1)) FILTER (r.ideal_rank <= 10) AS ideal_dcg_at_10
FROM tune_relevant AS r
GROUP BY r.query_id;

SELECT CASE
    WHEN (SELECT count(*) FROM tune_judged) = 0
        THEN error('tune_fusion.sql: no query of the queries table has a judgment of grade > 0 (that resolves '
                   || 'to a chunk) in qrels; load judgments with sql/load_queries.sql --param qrels_path=FILE')
END AS checked;

-- Only judged queries are searched: the others cannot score.
CREATE OR REPLACE TEMP TABLE tune_queries AS
SELECT q.* FROM queries AS q WHERE q.query_id::VARCHAR IN (SELECT j.query_id FROM tune_judged AS j);

-- Each channel once, at the depth every grid point fuses.
CREATE OR REPLACE TEMP TABLE tune_faiss AS
SELECT f.query_id AS query_id, f.rank AS rank, f.chunk_id AS chunk_id
FROM channel_faiss(k := getvariable('tune_depth'), queries := 'tune_queries') AS f;

CREATE OR REPLACE TEMP TABLE tune_bm25 AS
SELECT b.query_id AS query_id, b.rank AS rank, b.chunk_id AS chunk_id
FROM channel_bm25(k := getvariable('tune_depth'), queries := 'tune_queries') AS b;

-- The grid (point > 0), and each channel alone as its search ranked it (points -1, -2): the
-- references the zero-weight grid points must reproduce.
CREATE OR REPLACE TEMP TABLE tune_points AS
SELECT
    (row_number() OVER (ORDER BY r.rrf_k, f.weight, b.weight))::INTEGER AS point,
    'grid' AS kind,
    f.weight::DOUBLE AS faiss_weight,
    b.weight::DOUBLE AS bm25_weight,
    r.rrf_k::DOUBLE AS rrf_k
FROM (VALUES (0), (0.25), (0.5), (1), (2), (4)) AS f(weight)
CROSS JOIN (VALUES (0), (0.25), (0.5), (1), (2), (4)) AS b(weight)
CROSS JOIN (VALUES (10), (30), (60)) AS r(rrf_k)
WHERE f.weight + b.weight > 0
UNION ALL
SELECT -1, 'faiss', 1, 0, NULL
UNION ALL
SELECT -2, 'bm25', 0, 1, NULL;

-- Every point's top k per query, fused as channel_hybrid fuses (same DOUBLE arithmetic, same
-- order), so a grid point ranks exactly as channel_hybrid with its parameters.
CREATE OR REPLACE TEMP TABLE tune_ranked AS
WITH candidates AS (
    SELECT p.point AS point, f.query_id AS query_id, f.chunk_id AS chunk_id,
           p.faiss_weight / (p.rrf_k + f.rank) AS part
    FROM tune_points AS p
    JOIN tune_faiss AS f ON p.kind = 'grid' AND p.faiss_weight > 0
    UNION ALL
    SELECT p.point AS point, b.query_id AS query_id, b.chunk_id AS chunk_id,
           p.bm25_weight / (p.rrf_k + b.rank) AS part
    FROM tune_points AS p
    JOIN tune_bm25 AS b ON p.kind = 'grid' AND p.bm25_weight > 0
),
fused AS (
    SELECT c.point AS point, c.query_id AS query_id, c.chunk_id AS chunk_id, sum(c.part)::DOUBLE AS score
    FROM candidates AS c
    GROUP BY c.point, c.query_id, c.chunk_id
)
SELECT
    u.point AS point,
    u.query_id AS query_id,
    row_number() OVER (PARTITION BY u.point, u.query_id ORDER BY u.score DESC, u.chunk_id)::INTEGER AS rank,
    u.chunk_id AS chunk_id
FROM fused AS u
QUALIFY rank <= getvariable('tune_k')
UNION ALL
SELECT -1, f.query_id, f.rank, f.chunk_id FROM tune_faiss AS f WHERE f.rank <= getvariable('tune_k')
UNION ALL
SELECT -2, b.query_id, b.rank, b.chunk_id FROM tune_bm25 AS b WHERE b.rank <= getvariable('tune_k');

-- v_eval_per_query's figures per point and judged query (a query a point returned nothing
-- for scores 0), averaged as v_eval_per_channel does.  The sums run in query order, so
-- points that rank alike get bit-identical means and tie exactly.
CREATE OR REPLACE TEMP TABLE tune_scores AS
WITH hits AS (
    SELECT
        t.point AS point,
        t.query_id AS query_id,
        min(t.rank) AS first_relevant_rank,
        sum(r.grade / log2(t.rank + 1)) FILTER (t.rank <= 10) AS dcg_at_10,
        count(*) FILTER (t.rank <= 10) AS relevant_in_10,
        count(*) AS relevant_in_k
    FROM tune_ranked AS t
    JOIN tune_relevant AS r ON r.query_id = t.query_id AND r.chunk_id = t.chunk_id
    GROUP BY t.point, t.query_id
),
per_query AS (
    SELECT
        p.point AS point,
        j.query_id AS query_id,
        CASE WHEN h.first_relevant_rank <= 10 THEN 1.0 / h.first_relevant_rank ELSE 0.0 END::DOUBLE AS rr_at_10,
        coalesce(h.dcg_at_10 / j.ideal_dcg_at_10, 0.0)::DOUBLE AS ndcg_at_10,
        (coalesce(h.relevant_in_10, 0) / j.relevant_chunks)::DOUBLE AS recall_at_10,
        (coalesce(h.relevant_in_k, 0) / j.relevant_chunks)::DOUBLE AS recall_at_k
    FROM tune_points AS p
    CROSS JOIN tune_judged AS j
    LEFT JOIN hits AS h ON h.point = p.point AND h.query_id = j.query_id
)
SELECT
    p.point AS point,
    p.kind AS kind,
    p.faiss_weight AS faiss_weight,
    p.bm25_weight AS bm25_weight,
    p.rrf_k AS rrf_k,
    (sum(e.rr_at_10 ORDER BY e.query_id) / count(*))::DOUBLE AS mrr_at_10,
    (sum(e.ndcg_at_10 ORDER BY e.query_id) / count(*))::DOUBLE AS ndcg_at_10,
    (sum(e.recall_at_10 ORDER BY e.query_id) / count(*))::DOUBLE AS recall_at_10,
    (sum(e.recall_at_k ORDER BY e.query_id) / count(*))::DOUBLE AS recall_at_k,
    count(*)::BIGINT AS queries
FROM tune_points AS p
JOIN per_query AS e ON e.point = p.point
GROUP BY p.point, p.kind, p.faiss_weight, p.bm25_weight, p.rrf_k;

-- The preference order of the pick; 1 is the pick.
CREATE OR REPLACE TEMP TABLE tune_grid AS
SELECT
    s.*,
    (row_number() OVER (ORDER BY
        s.mrr_at_10 DESC,
        CASE WHEN s.faiss_weight = 0 OR s.bm25_weight = 0 THEN 'Infinity'::DOUBLE
             ELSE abs(ln(s.faiss_weight / s.bm25_weight)) END,
        abs(s.rrf_k - 60),
        abs(ln(greatest(s.faiss_weight, s.bm25_weight))),
        s.faiss_weight DESC,
        s.bm25_weight DESC))::INTEGER AS preference
FROM tune_scores AS s
WHERE s.kind = 'grid';

-- Guards: a zero-weight point must rank as its channel alone, and the pick must not score
-- below the better channel alone; either failing means the fusion here is wrong.
SELECT CASE
    WHEN EXISTS (
        SELECT 1
        FROM tune_grid AS g
        JOIN tune_scores AS s ON s.kind = CASE WHEN g.bm25_weight = 0 THEN 'faiss' ELSE 'bm25' END
        WHERE (g.faiss_weight = 0 OR g.bm25_weight = 0)
          AND (g.mrr_at_10 <> s.mrr_at_10 OR g.recall_at_k <> s.recall_at_k OR g.ndcg_at_10 <> s.ndcg_at_10))
        THEN error('tune_fusion.sql: a grid point with one weight 0 does not score as that channel alone; '
                   || 'the fusion in this script has drifted from channel_hybrid''s, fix the script')
    WHEN (SELECT g.mrr_at_10 FROM tune_grid AS g WHERE g.preference = 1)
         < (SELECT max(s.mrr_at_10) FROM tune_scores AS s WHERE s.kind IN ('faiss', 'bm25'))
        THEN error('tune_fusion.sql: the picked point scores below a channel alone, which is a grid point; '
                   || 'the pick in this script is wrong, fix the script')
END AS checked;

-- The figures of a point as fusion.json records them.
CREATE OR REPLACE TEMP MACRO tune_point_json(s) AS json_object(
    'faiss_weight', s.faiss_weight, 'bm25_weight', s.bm25_weight, 'rrf_k', s.rrf_k,
    'mrr_at_10', s.mrr_at_10, 'ndcg_at_10', s.ndcg_at_10, 'recall_at_10', s.recall_at_10,
    'recall_at_k', s.recall_at_k);

SET VARIABLE tune_profile_path = (
    SELECT fusion_save(json_object(
        'faiss_weight', p.faiss_weight,
        'bm25_weight', p.bm25_weight,
        'rrf_k', p.rrf_k,
        'depth', getvariable('tune_depth'),
        'k', getvariable('tune_k'),
        'metric', 'mrr_at_10',
        'metric_definition', 'mean over judged queries of 1 / rank of the first chunk of grade > 0 within the '
                             || 'top 10 (0 if none), as v_eval_per_query and v_eval_per_channel',
        'picked_by', 'best mrr_at_10; ties: weight ratio nearest 1, then rrf_k nearest 60, then the larger '
                     || 'weight nearest 1',
        'queries', p.queries,
        'query_set', 'every query of the queries table with a judgment of grade > 0 (the tuning set; figures '
                     || 'on it are optimistic for it)',
        'picked', tune_point_json(p),
        'faiss_alone', (SELECT tune_point_json(s) FROM tune_scores AS s WHERE s.kind = 'faiss'),
        'bm25_alone', (SELECT tune_point_json(s) FROM tune_scores AS s WHERE s.kind = 'bm25'),
        'grid', (SELECT to_json(list(tune_point_json(g) ORDER BY g.point)) FROM tune_grid AS g),
        'measured_on', json_object(
            'index_version', getvariable('tune_versions').faiss_version,
            'faiss_tuning', getvariable('tune_versions').faiss_tuning,
            'store_version', getvariable('tune_versions').store_version,
            'store_fingerprint', getvariable('tune_versions').store_fingerprint,
            'bm25_store_version', getvariable('tune_bm25').store_version,
            'bm25_store_fingerprint', getvariable('tune_bm25').store_fingerprint,
            'bm25_k1', 1.2,
            'bm25_b', 0.75)
    ))
    FROM tune_grid AS p
    WHERE p.preference = 1
);

-- The per-query rows are done with; the connection keeps the figures only.
DROP TABLE tune_ranked;
DROP TABLE tune_faiss;
DROP TABLE tune_bm25;

SELECT
    p.faiss_weight AS faiss_weight,
    p.bm25_weight AS bm25_weight,
    p.rrf_k AS rrf_k,
    getvariable('tune_depth')::INTEGER AS depth,
    p.mrr_at_10 AS mrr_at_10,
    (SELECT s.mrr_at_10 FROM tune_scores AS s WHERE s.kind = 'faiss') AS faiss_mrr_at_10,
    (SELECT s.mrr_at_10 FROM tune_scores AS s WHERE s.kind = 'bm25') AS bm25_mrr_at_10,
    p.queries AS queries,
    getvariable('tune_profile_path')::VARCHAR AS profile
FROM tune_grid AS p
WHERE p.preference = 1;
