/* v_faiss_idmap: one row per vector of the published FAISS index (index/CURRENT): its row
   inside the index and the chunk id the index returns for it. */
CREATE OR REPLACE VIEW v_faiss_idmap AS
SELECT
    m.faiss_row::BIGINT AS faiss_row,
    m.external_id::BIGINT AS chunk_id
FROM read_parquet('index/CURRENT/faiss_idmap.parquet') AS m;
