/* Import a user's own chunks and embeddings as a chunk store.

   Parameters: source_path (a Parquet file with the chunk-store columns, its schema
   already checked by the caller; any embedding dimension), arrow_schema (its ARROW:schema
   footer value) and staging_dir.  Rows breaking a rule stop the import with a message naming
   the rule; nothing is published then.  Writes chunks.parquet and files.parquet. */

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

COPY (
    SELECT
        s.id::BIGINT AS id,
        s.uri::VARCHAR AS uri,
        s.start_byte::BIGINT AS start_byte,
        s.end_byte::BIGINT AS end_byte,
        s.start_line::INTEGER AS start_line,
        s.end_line::INTEGER AS end_line,
        s.language::VARCHAR AS language,
        s.kind::VARCHAR AS kind,
        coalesce(s.symbols, [])::VARCHAR[] AS symbols,
        s.content::VARCHAR AS content,
        s.embedding AS embedding
    FROM read_parquet(getvariable('source_path')) AS s
    ORDER BY s.uri, s.start_byte
) TO (getvariable('staging_dir') || 'chunks.parquet') (
    FORMAT parquet,
    COMPRESSION zstd,
    -- Lets Arrow readers restore embedding as FixedSizeList(float32); DuckDB reads a list.
    KV_METADATA {'ARROW:schema': getvariable('arrow_schema')}
);

COPY (
    SELECT
        c.uri::VARCHAR AS uri,
        any_value(c.language)::VARCHAR AS language,
        (max(c.end_byte) - min(c.start_byte))::BIGINT AS size_bytes,
        'chunked' AS status,
        count(*)::BIGINT AS chunk_count,
        coalesce(max(c.end_line), 0)::BIGINT AS line_count
    FROM read_parquet(getvariable('staging_dir') || 'chunks.parquet') AS c
    GROUP BY c.uri
    ORDER BY c.uri
) TO (getvariable('staging_dir') || 'files.parquet') (FORMAT parquet, COMPRESSION zstd);
