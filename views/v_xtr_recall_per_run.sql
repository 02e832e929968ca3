/* v_xtr_recall_per_run: per run, the means over the lens queries of v_xtr_recall_per_query: recall@k
   against the XTR (late-interaction) oracle and against the exact Flat oracle over the XTR dev split
   (pool hits outside the split don't count; hits_outside_dev_split totals them), how far the two
   oracles agree, and the lens's note.  A diagnostic, NOT ground truth: the oracles are model
   rankings, relevance is in the qrels (v_eval_per_channel). */
CREATE OR REPLACE VIEW v_xtr_recall_per_run AS
SELECT
    u.run_id::VARCHAR AS run_id,
    u.channel::VARCHAR AS channel,
    u.created_at::TIMESTAMP AS created_at,
    u.parameters::JSON AS parameters,
    any_value(e.k)::INTEGER AS k,
    count(e.query_id)::BIGINT AS lens_queries,
    count(e.recall_vs_xtr)::BIGINT AS xtr_queries,
    avg(e.recall_vs_xtr)::DOUBLE AS recall_vs_xtr,
    avg(e.recall_vs_flat)::DOUBLE AS recall_vs_flat,
    avg(e.xtr_flat_overlap)::DOUBLE AS xtr_flat_overlap,
    sum(e.hits_outside_dev_split)::BIGINT AS hits_outside_dev_split,
    any_value(l.note)::VARCHAR AS note
FROM v_runs AS u
JOIN v_xtr_recall_per_query AS e ON e.run_id = u.run_id
CROSS JOIN read_parquet('xtr/lens.parquet') AS l
GROUP BY u.run_id, u.channel, u.created_at, u.parameters;
