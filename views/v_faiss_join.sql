/* v_faiss_join: every chunk of the current store with its place in the published FAISS
   index; chunks the index lacks (added since the build, or without an embedding) have
   faiss_row NULL and indexed false. */
CREATE OR REPLACE VIEW v_faiss_join AS
SELECT
    c.*,
    m.faiss_row::BIGINT AS faiss_row,
    (m.faiss_row IS NOT NULL)::BOOLEAN AS indexed
FROM chunks AS c
LEFT JOIN v_faiss_idmap AS m ON m.chunk_id = c.id;
