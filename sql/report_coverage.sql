/* Coverage report: per module, the share of its chunks that the latest run of each channel
   returns in any top-k over the query set (bars from 0 to 100 %), with the module's chunks,
   how many the FAISS index holds and how many no run has ever returned; least reached
   modules first.  Needs pools (sql/write_pool.sql) and a FAISS index. */
SELECT
    h.module AS module,
    h.chunks AS chunks,
    h.indexed_chunks AS indexed,
    h.never_retrieved AS never_retrieved,
    round(h.faiss_share, 2) AS faiss,
    h.faiss_bar AS faiss_bar,
    round(h.bm25_share, 2) AS bm25,
    h.bm25_bar AS bm25_bar,
    round(h.hybrid_share, 2) AS hybrid,
    h.hybrid_bar AS hybrid_bar
FROM v_coverage_heatmap AS h
ORDER BY greatest(h.faiss_share, h.bm25_share, h.hybrid_share) NULLS FIRST, h.module;
