/* v_faiss_join: every chunk of the current store with its place in the published FAISS
   index; chunks the index lacks (added since the build, or without an embedding) have
   faiss_row NULL and indexed false. */
CREATE OR REPLACE VIEW v_faiss_join AS
SELECT
    c.id::BIGINT AS id,
    c.uri::VARCHAR AS uri,
    c.start_byte::BIGINT AS start_byte,
    c.end_byte::BIGINT AS end_byte,
    c.start_line::INTEGER AS start_line,
    c.end_line::INTEGER AS end_line,
    c.language::VARCHAR AS language,
    c.kind::VARCHAR AS kind,
    c.symbols::VARCHAR[] AS symbols,
    c.content::VARCHAR AS content,
    c.embedding AS embedding,
    m.faiss_row::BIGINT AS faiss_row,
    (m.faiss_row IS NOT NULL)::BOOLEAN AS indexed
FROM chunks AS c
LEFT JOIN v_faiss_idmap AS m ON m.chunk_id = c.id;
