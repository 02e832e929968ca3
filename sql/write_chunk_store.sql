/* Write the staged chunks (temp view staged_chunks, left by the ingest or import script) as
   the store's chunks.parquet, with the chunk-store column types.

   Parameters: staging_dir, and arrow_schema (the ARROW:schema footer value, so Arrow
   readers see embedding as FixedSizeList(float32); DuckDB itself reads a list, which the
   chunks view casts back to FLOAT[n]). */

COPY (
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
        c.embedding AS embedding
    FROM staged_chunks AS c
    ORDER BY c.uri, c.start_byte
) TO (getvariable('staging_dir') || 'chunks.parquet') (
    FORMAT parquet,
    COMPRESSION zstd,
    KV_METADATA {'ARROW:schema': getvariable('arrow_schema')}
);
