/* v_coverage_never_retrieved: the chunks no run of any channel has returned for any query
   (in no pool), with their module and whether the FAISS index holds them: the parts of the
   codebase that retrieval, as evaluated, never finds. */
CREATE OR REPLACE VIEW v_coverage_never_retrieved AS
SELECT
    j.id::BIGINT AS chunk_id,
    cm.module::VARCHAR AS module,
    j.uri::VARCHAR AS uri,
    j.start_line::INTEGER AS start_line,
    j.end_line::INTEGER AS end_line,
    j.kind::VARCHAR AS kind,
    j.symbols::VARCHAR[] AS symbols,
    j.indexed::BOOLEAN AS indexed
FROM v_faiss_join AS j
LEFT JOIN chunk_modules AS cm ON cm.chunk_id = j.id
WHERE NOT EXISTS (SELECT 1 FROM pool AS p WHERE p.chunk_id = j.id);
