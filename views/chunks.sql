/* chunks: one row per AST chunk of the current chunk store, with its embedding. */
CREATE OR REPLACE VIEW chunks AS
SELECT
    s.id::BIGINT AS id,
    s.uri::VARCHAR AS uri,
    s.start_byte::BIGINT AS start_byte,
    s.end_byte::BIGINT AS end_byte,
    s.start_line::INTEGER AS start_line,
    s.end_line::INTEGER AS end_line,
    s.language::VARCHAR AS language,
    s.kind::VARCHAR AS kind,
    s.symbols::VARCHAR[] AS symbols,
    s.content::VARCHAR AS content,
    -- Parquet keeps no array length, so the store's dimension is restored here.
    s.embedding::FLOAT[${embedding_dim}] AS embedding
FROM read_parquet('store/CURRENT/chunks.parquet') AS s;
