/* XTR oracle lens, per channel: recall@k of each channel's latest run (per parameter set) against
   the late-interaction (XTR, MaxSim over token vectors) oracle and against the exact Flat oracle
   (sentence embeddings), both over the dev split of sql/build_xtr.sql, and how far the two oracles
   agree.  A DIAGNOSTIC, NOT GROUND TRUTH: it shows which chunks a stronger scorer over the same
   encoder would rank first that a channel misses; relevance is what sql/report_eval.sql measures.
   Pool hits outside the dev split don't count (hits_outside_dev_split); rebuild the lens
   (python bootstrap.py xtr --catalog DIR) after pooling new runs. */
SELECT
    r.channel AS channel,
    r.lens_queries AS queries,
    r.k AS k,
    round(r.recall_vs_xtr, 3) AS recall_vs_xtr,
    round(r.recall_vs_flat, 3) AS recall_vs_flat,
    round(r.xtr_flat_overlap, 3) AS xtr_flat_overlap,
    r.hits_outside_dev_split AS hits_outside_dev_split,
    r.run_id AS run_id,
    r.note AS note
FROM v_xtr_recall_per_run AS r
QUALIFY row_number() OVER (PARTITION BY r.channel, r.parameters::VARCHAR ORDER BY r.created_at DESC, r.run_id DESC) = 1
ORDER BY r.recall_vs_xtr DESC NULLS LAST, r.channel;
