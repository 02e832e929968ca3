/* v_coverage_unindexed_modules: modules of which the published FAISS index holds no chunk
   (built before they were ingested, or holding no chunks at all): vector search cannot
   reach them whatever the query. */
CREATE OR REPLACE VIEW v_coverage_unindexed_modules AS
SELECT
    m.module::VARCHAR AS module,
    m.prefix::VARCHAR AS prefix,
    count(j.id)::BIGINT AS chunks
FROM modules AS m
LEFT JOIN chunk_modules AS cm ON cm.module = m.module
LEFT JOIN v_faiss_join AS j ON j.id = cm.chunk_id
GROUP BY m.module, m.prefix
HAVING count(j.id) FILTER (j.indexed) = 0;
