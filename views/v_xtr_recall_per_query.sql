/* v_xtr_recall_per_query: per run and lens query, the share of each oracle's top k that the run's
   top k holds, over the XTR dev split (the xtr/ Parquet files of sql/build_xtr.sql): recall_vs_xtr
   against the late-interaction (MaxSim) oracle, recall_vs_flat against exact inner-product search on
   the sentence embeddings, and xtr_flat_overlap, the share of the XTR top k also in the Flat top k
   (how far the two lenses agree).  k is the run's depth, capped at the lens depth.
   Restricted to the dev split: the oracles rank its chunks only, so a pool hit outside the split
   counts neither as found nor as missed (hits_outside_dev_split says how many there were; runs
   pooled before the lens was built have none).  Runs with no row for any lens query (made on
   another query set) are left out; a lens query the run returned nothing for scores 0;
   recall_vs_xtr is NULL for a query without text (no token ranking).
   A diagnostic of agreement with two model rankings, NOT ground truth: relevance is in the qrels
   (v_eval_per_query). */
CREATE OR REPLACE VIEW v_xtr_recall_per_query AS
WITH lens AS (
    SELECT l.k AS k
    FROM read_parquet('xtr/lens.parquet') AS l
),
dev_split AS (
    SELECT d.chunk_id AS chunk_id
    FROM read_parquet('xtr/dev_split.parquet') AS d
),
oracle_rows AS (
    SELECT 'xtr' AS lens, o.query_id AS query_id, o.rank AS rank, o.chunk_id AS chunk_id
    FROM read_parquet('xtr/oracle.parquet') AS o
    UNION ALL
    SELECT 'flat' AS lens, f.query_id AS query_id, f.rank AS rank, f.chunk_id AS chunk_id
    FROM read_parquet('xtr/flat_oracle.parquet') AS f
),
-- Every lens query has a Flat ranking (the XTR one needs text).
lens_queries AS (
    SELECT DISTINCT o.query_id AS query_id
    FROM oracle_rows AS o
    WHERE o.lens = 'flat'
),
lens_runs AS (
    SELECT u.run_id AS run_id, u.channel AS channel, least(u.k, l.k) AS k
    FROM v_runs AS u
    CROSS JOIN lens AS l
    WHERE u.run_id IN (SELECT p.run_id FROM pool AS p JOIN lens_queries AS q ON q.query_id = p.query_id)
),
-- Each chunk of a run's top k or of an oracle's top k (at the run's k), with where it was seen.
sightings AS (
    SELECT
        r.run_id AS run_id,
        p.query_id AS query_id,
        p.chunk_id AS chunk_id,
        CASE WHEN p.chunk_id IN (SELECT d.chunk_id FROM dev_split AS d) THEN 'run' ELSE 'run_outside' END AS source
    FROM lens_runs AS r
    JOIN pool AS p ON p.run_id = r.run_id AND p.rank <= r.k
    JOIN lens_queries AS q ON q.query_id = p.query_id
    UNION ALL
    SELECT r.run_id AS run_id, o.query_id AS query_id, o.chunk_id AS chunk_id, o.lens AS source
    FROM lens_runs AS r
    JOIN oracle_rows AS o ON o.rank <= r.k
),
chunk_flags AS (
    SELECT
        s.run_id AS run_id,
        s.query_id AS query_id,
        bool_or(s.source = 'run') AS in_run,
        bool_or(s.source = 'run_outside') AS outside_split,
        bool_or(s.source = 'xtr') AS in_xtr,
        bool_or(s.source = 'flat') AS in_flat
    FROM sightings AS s
    GROUP BY s.run_id, s.query_id, s.chunk_id
),
per_query AS (
    SELECT
        f.run_id AS run_id,
        f.query_id AS query_id,
        count(*) FILTER (f.in_xtr) AS xtr_chunks,
        count(*) FILTER (f.in_xtr AND f.in_run) AS xtr_found,
        count(*) FILTER (f.in_flat) AS flat_chunks,
        count(*) FILTER (f.in_flat AND f.in_run) AS flat_found,
        count(*) FILTER (f.in_xtr AND f.in_flat) AS lenses_shared,
        count(*) FILTER (f.in_run) AS hits_in_dev_split,
        count(*) FILTER (f.outside_split) AS hits_outside_dev_split
    FROM chunk_flags AS f
    GROUP BY f.run_id, f.query_id
)
SELECT
    r.run_id::VARCHAR AS run_id,
    r.channel::VARCHAR AS channel,
    e.query_id::VARCHAR AS query_id,
    r.k::INTEGER AS k,
    (e.xtr_found / nullif(e.xtr_chunks, 0))::DOUBLE AS recall_vs_xtr,
    (e.flat_found / e.flat_chunks)::DOUBLE AS recall_vs_flat,
    (e.lenses_shared / nullif(e.xtr_chunks, 0))::DOUBLE AS xtr_flat_overlap,
    e.hits_in_dev_split::BIGINT AS hits_in_dev_split,
    e.hits_outside_dev_split::BIGINT AS hits_outside_dev_split
FROM per_query AS e
JOIN lens_runs AS r ON r.run_id = e.run_id;
