/* v_eval_per_query: retrieval quality per run and judged query (a query with a judgment of
   grade > 0 in v_qrels_chunks): the rank of the first relevant chunk in the run's top k
   (NULL if none) and its reciprocal within the top 10, nDCG@10 with linear gain (gain =
   grade, discount log2(rank + 1), as trec_eval and ir-measures compute it), recall within
   the top 10 and within the run's k.  A query the run returned nothing for scores 0. */
CREATE OR REPLACE VIEW v_eval_per_query AS
WITH relevant AS (
    SELECT g.query_id AS query_id, g.chunk_id AS chunk_id, g.grade AS grade,
           row_number() OVER (PARTITION BY g.query_id ORDER BY g.grade DESC, g.chunk_id) AS ideal_rank
    FROM v_qrels_chunks AS g
    WHERE g.grade > 0
),
judged_queries AS (
    SELECT
        r.query_id AS query_id,
        count(*) AS relevant_chunks,
        sum(r.grade / log2(r.ideal_rank + 1)) FILTER (r.ideal_rank <= 10) AS ideal_dcg_at_10
    FROM relevant AS r
    GROUP BY r.query_id
),
relevant_hits AS (
    SELECT p.run_id AS run_id, p.query_id AS query_id, p.rank AS rank, r.grade AS grade
    FROM pool AS p
    JOIN relevant AS r ON r.query_id = p.query_id AND r.chunk_id = p.chunk_id
),
per_query AS (
    SELECT
        u.run_id AS run_id,
        u.channel AS channel,
        u.k AS k,
        j.query_id AS query_id,
        j.relevant_chunks AS relevant_chunks,
        j.ideal_dcg_at_10 AS ideal_dcg_at_10,
        min(h.rank) AS first_relevant_rank,
        sum(h.grade / log2(h.rank + 1)) FILTER (h.rank <= 10) AS dcg_at_10,
        count(h.rank) FILTER (h.rank <= 10) AS relevant_in_10,
        count(h.rank) FILTER (h.rank <= u.k) AS relevant_in_k
    FROM v_runs AS u
    CROSS JOIN judged_queries AS j
    LEFT JOIN relevant_hits AS h ON h.run_id = u.run_id AND h.query_id = j.query_id
    GROUP BY u.run_id, u.channel, u.k, j.query_id, j.relevant_chunks, j.ideal_dcg_at_10
)
SELECT
    e.run_id::VARCHAR AS run_id,
    e.channel::VARCHAR AS channel,
    e.query_id::VARCHAR AS query_id,
    e.relevant_chunks::BIGINT AS relevant_chunks,
    e.first_relevant_rank::INTEGER AS first_relevant_rank,
    CASE WHEN e.first_relevant_rank <= 10 THEN 1.0 / e.first_relevant_rank ELSE 0.0 END::DOUBLE AS rr_at_10,
    coalesce(e.dcg_at_10 / e.ideal_dcg_at_10, 0.0)::DOUBLE AS ndcg_at_10,
    (e.relevant_in_10 / e.relevant_chunks)::DOUBLE AS recall_at_10,
    (e.relevant_in_k / e.relevant_chunks)::DOUBLE AS recall_at_k,
    e.k::INTEGER AS k
FROM per_query AS e;
