/* chunks: one row per AST chunk of the current chunk store, with its embedding.
   The columns are those of the store's Parquet parts (udfs/store_schema.py defines them); an
   incremental ingest adds a part and lists the ids it replaced in deleted_ids.parquet, so the
   parts alone can hold rows that are gone: read this view, not the parts. */
CREATE OR REPLACE VIEW chunks AS
SELECT
    -- Parquet keeps no array length, so the store's dimension is restored here.
    s.* REPLACE (s.embedding::FLOAT[${embedding_dim}] AS embedding)
FROM read_parquet('store/CURRENT/chunks*.parquet') AS s
ANTI JOIN read_parquet('store/CURRENT/deleted_ids.parquet') AS d ON d.id = s.id;
