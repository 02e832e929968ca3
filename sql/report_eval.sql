/* Retrieval quality per channel: MRR@10, nDCG@10 (linear gain) and recall@10 / recall@k
   over the judged queries, one row per channel and parameter set (its latest run), best
   MRR first.  Needs a query set with qrels (sql/load_queries.sql) and pools. */
SELECT
    e.channel AS channel,
    CASE e.channel
        WHEN 'hybrid' THEN printf('rrf_k=%s faiss=%s bm25=%s depth=%s', e.parameters ->> 'rrf_k',
                                  e.parameters ->> 'faiss_weight', e.parameters ->> 'bm25_weight',
                                  e.parameters ->> 'depth')
        WHEN 'bm25' THEN printf('k1=%s b=%s', e.parameters ->> 'k1', e.parameters ->> 'b')
        ELSE ''
    END AS settings,
    e.judged_queries AS queries,
    round(e.mrr_at_10, 3) AS mrr_at_10,
    round(e.ndcg_at_10, 3) AS ndcg_at_10,
    round(e.recall_at_10, 3) AS recall_at_10,
    e.k AS k,
    round(e.recall_at_k, 3) AS recall_at_k,
    e.run_id AS run_id
FROM v_eval_per_channel AS e
QUALIFY row_number() OVER (PARTITION BY e.channel, e.parameters::VARCHAR ORDER BY e.created_at DESC, e.run_id DESC) = 1
ORDER BY e.mrr_at_10 DESC, e.channel;
