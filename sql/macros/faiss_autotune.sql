/* faiss_autotune(k := 10, target_recall := 0.95, queries := NULL, query_count := 1000, seed := 0)
     -> parameters VARCHAR, recall_at_k DOUBLE, recall_low DOUBLE, recall_high DOUBLE,
        single_mean_ms DOUBLE, single_p95_ms DOUBLE, batch_mean_ms DOUBLE, batch_p95_ms DOUBLE,
        pareto BOOLEAN, build_default BOOLEAN, meets_target BOOLEAN, picked BOOLEAN, note VARCHAR
     Measures every point of the published index's search-parameter grid (FAISS ParameterSpace:
     nprobe for IVF, efSearch for HNSW, refine_k_factor for ivf_pq_refine's refine, and their
     combinations), one row each: recall@k against exact search over the index's own vectors
     with a 95% Wilson interval, and per-query latency in milliseconds searching one query per
     call and 64 per call (mean and p95).  It picks the fastest point whose recall@k reaches
     target_recall, or the best recall when none does (the picked row's note says which),
     writes index/versions/<v>/tuning.json and tuning.png, and leaves the point applied on this
     connection; every later load of that version applies it too.  A Flat index has nothing to
     tune: one row, recall 1.
     queries: NULL (default) for a seeded held-out sample: query_count of the index's vectors,
     each perturbed so that it is not simply its own nearest neighbour.  Otherwise your own
     query vectors: the name of a table or view, or a Parquet file path, read with
     query_table(queries); it needs a column `embedding` (FLOAT[] or FLOAT[n] of the index's
     dimension).  More than query_count rows are sampled, seeded by seed.
         SELECT parameters, recall_at_k, batch_mean_ms, picked FROM faiss_autotune(target_recall := 0.9);
         CREATE TABLE my_queries AS SELECT embed(question) AS embedding FROM questions;
         SELECT * FROM faiss_autotune(k := 20, queries := 'my_queries');
         SELECT * FROM faiss_autotune(queries := '/data/eval_queries.parquet') WHERE picked; */

-- query_table() cannot take NULL, so "no queries" names this empty view instead.
CREATE OR REPLACE TEMP VIEW faiss_autotune_no_queries AS
SELECT CAST(NULL AS FLOAT[]) AS embedding
WHERE false;

CREATE OR REPLACE TEMP MACRO faiss_autotune(
    k := 10, target_recall := 0.95, queries := NULL, query_count := 1000, seed := 0
) AS TABLE
SELECT
    point.parameters AS parameters,
    point.recall_at_k AS recall_at_k,
    point.recall_low AS recall_low,
    point.recall_high AS recall_high,
    point.single_mean_ms AS single_mean_ms,
    point.single_p95_ms AS single_p95_ms,
    point.batch_mean_ms AS batch_mean_ms,
    point.batch_p95_ms AS batch_p95_ms,
    point.pareto AS pareto,
    point.build_default AS build_default,
    point.meets_target AS meets_target,
    point.picked AS picked,
    point.note AS note
-- The sweep runs in a subquery, not as a table function's argument: those are evaluated while
-- binding, so every bind (EXPLAIN, a relation's schema) would sweep again.
FROM (
    SELECT unnest(faiss_autotune(
        CAST(k AS INTEGER),
        CAST(target_recall AS DOUBLE),
        CAST(queries AS VARCHAR),
        -- Unqualified, so a table without the column gets "column embedding not found".
        (SELECT list(CAST(embedding AS FLOAT[]))
         FROM query_table(coalesce(CAST(queries AS VARCHAR), 'faiss_autotune_no_queries'))),
        CAST(query_count AS INTEGER),
        CAST(seed AS INTEGER))) AS point
);
