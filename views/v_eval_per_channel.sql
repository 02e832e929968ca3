/* v_eval_per_channel: retrieval quality per run (one channel with one set of parameters),
   the means of v_eval_per_query over every judged query: MRR@10, nDCG@10 (linear gain),
   recall@10 and recall@k (k the run's depth). */
CREATE OR REPLACE VIEW v_eval_per_channel AS
SELECT
    u.run_id::VARCHAR AS run_id,
    u.channel::VARCHAR AS channel,
    u.created_at::TIMESTAMP AS created_at,
    u.parameters::JSON AS parameters,
    count(e.query_id)::BIGINT AS judged_queries,
    avg(e.rr_at_10)::DOUBLE AS mrr_at_10,
    avg(e.ndcg_at_10)::DOUBLE AS ndcg_at_10,
    avg(e.recall_at_10)::DOUBLE AS recall_at_10,
    avg(e.recall_at_k)::DOUBLE AS recall_at_k,
    u.k::INTEGER AS k
FROM v_runs AS u
LEFT JOIN v_eval_per_query AS e ON e.run_id = u.run_id
GROUP BY u.run_id, u.channel, u.created_at, u.parameters, u.k;
