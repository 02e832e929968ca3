/* chunks: one row per AST chunk of the current chunk store, with its embedding.
   The columns are those of chunks.parquet (udfs/store_schema.py defines them). */
CREATE OR REPLACE VIEW chunks AS
SELECT
    -- Parquet keeps no array length, so the store's dimension is restored here.
    s.* REPLACE (s.embedding::FLOAT[${embedding_dim}] AS embedding)
FROM read_parquet('store/CURRENT/chunks.parquet') AS s;
