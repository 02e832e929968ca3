/* v_faiss_orphan_ids: audit, expected empty: ids the published FAISS index can return that
   name no chunk of the current store (the store changed since the build).  Rows here break
   the rule "every indexed id is a chunk"; rebuild the index to clear them. */
CREATE OR REPLACE VIEW v_faiss_orphan_ids AS
SELECT
    m.faiss_row::BIGINT AS faiss_row,
    m.chunk_id::BIGINT AS chunk_id
FROM v_faiss_idmap AS m
WHERE NOT EXISTS (SELECT 1 FROM chunks AS c WHERE c.id = m.chunk_id);
