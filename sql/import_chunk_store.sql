/* Import a user's own chunks and embeddings as a chunk store.

   Parameters: source_path (a Parquet file with the chunk-store columns, its schema
   already checked by the caller; any embedding dimension) and staging_dir.  Rows breaking
   a rule stop the import with a message naming the rule; nothing is published then.
   Writes files.parquet and leaves the temp view staged_chunks for write_chunk_store.sql. */

SELECT error('import: ' || count(*) || ' rows have a NULL or negative id; ids must be non-negative BIGINTs')
FROM read_parquet(getvariable('source_path')) AS s
WHERE s.id IS NULL OR s.id < 0
HAVING count(*) > 0;

SELECT error('import: id ' || s.id || ' appears ' || count(*) || ' times; ids must be unique')
FROM read_parquet(getvariable('source_path')) AS s
GROUP BY s.id
HAVING count(*) > 1
LIMIT 1;

SELECT error('import: ' || count(*) || ' rows have a NULL uri, content or embedding, or a bad byte range')
FROM read_parquet(getvariable('source_path')) AS s
WHERE s.uri IS NULL OR s.content IS NULL OR s.embedding IS NULL
   OR s.start_byte IS NULL OR s.end_byte IS NULL OR s.end_byte < s.start_byte
HAVING count(*) > 0;

CREATE OR REPLACE TEMP VIEW staged_chunks AS
SELECT * REPLACE (coalesce(s.symbols, []) AS symbols)
FROM read_parquet(getvariable('source_path')) AS s;

COPY (
    SELECT
        c.uri::VARCHAR AS uri,
        any_value(c.language)::VARCHAR AS language,
        (max(c.end_byte) - min(c.start_byte))::BIGINT AS size_bytes,
        'chunked' AS status,
        count(*)::BIGINT AS chunk_count,
        coalesce(max(c.end_line), 0)::BIGINT AS line_count
    FROM staged_chunks AS c
    GROUP BY c.uri
    ORDER BY c.uri
) TO (getvariable('staging_dir') || 'files.parquet') (FORMAT parquet, COMPRESSION zstd);
