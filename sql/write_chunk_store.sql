/* Write the staged chunks (temp view staged_chunks, left by the ingest or import script) as
   the store's chunks.parquet.

   The column types come from one place, udfs/store_schema.py: the caller makes the empty
   TEMP table chunk_rows from that schema, and INSERT ... BY NAME casts every staged column
   to it (a column the store lacks is not selected; one it needs and the stage lacks stays
   NULL and is refused by the audits).

   Parameters: staging_dir; chunk_columns (the schema's column names); arrow_schema (the
   ARROW:schema footer value, so Arrow readers see embedding as FixedSizeList(float32);
   DuckDB itself reads a list, which the chunks view casts back to FLOAT[n]). */

INSERT INTO chunk_rows BY NAME
SELECT COLUMNS(c -> list_contains(getvariable('chunk_columns'), c))
FROM staged_chunks;

COPY (
    SELECT *
    FROM chunk_rows
    ORDER BY uri, start_byte
) TO (getvariable('staging_dir') || 'chunks.parquet') (
    FORMAT parquet,
    COMPRESSION zstd,
    KV_METADATA {'ARROW:schema': getvariable('arrow_schema')}
);

DROP TABLE chunk_rows;
