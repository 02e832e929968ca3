/* Write the staged chunks (temp views left by the ingest or import script) as a chunk part of
   the store version in staging_dir, and its deleted-ids file (udfs/store_schema.py):

   * a full write (incremental false) writes every chunk, staged_chunks, as the one part
     chunks.parquet, and no deleted id;
   * an incremental write (an ingest beside an unchanged-chunker previous store whose parts the
     caller has hard-linked into staging_dir) writes staged_new_chunks as part_file, and the
     previous store's deleted ids plus staged_deleted_ids.

   The column types come from one place, udfs/store_schema.py: the caller makes the empty
   TEMP table chunk_rows from that schema, and INSERT ... BY NAME casts every staged column
   to it (a column the store lacks is not selected; one it needs and the stage lacks stays
   NULL and is refused by the audits).

   Parameters: staging_dir; incremental; part_file; previous_store (incremental only);
   chunk_columns (the schema's column names); arrow_schema (the ARROW:schema footer value, so
   Arrow readers see embedding as FixedSizeList(float32); DuckDB itself reads a list, which the
   chunks view casts back to FLOAT[n]). */

INSERT INTO chunk_rows BY NAME
SELECT COLUMNS(c -> list_contains(getvariable('chunk_columns'), c))
FROM query(CASE WHEN getvariable('incremental') THEN 'SELECT * FROM staged_new_chunks'
                ELSE 'SELECT * FROM staged_chunks' END);

COPY (
    SELECT *
    FROM chunk_rows
    ORDER BY uri, start_byte
) TO (getvariable('staging_dir') || getvariable('part_file')) (
    FORMAT parquet,
    COMPRESSION zstd,
    KV_METADATA {'ARROW:schema': getvariable('arrow_schema')}
);

COPY (
    SELECT id::BIGINT AS id
    FROM query(CASE WHEN getvariable('incremental') THEN
        'SELECT id FROM read_parquet(getvariable(''previous_store'') || ''deleted_ids.parquet'')
         UNION
         SELECT id FROM staged_deleted_ids'
    ELSE
        'SELECT NULL::BIGINT AS id WHERE false'
    END)
    ORDER BY id
) TO (getvariable('staging_dir') || 'deleted_ids.parquet') (FORMAT parquet, COMPRESSION zstd);

DROP TABLE chunk_rows;
