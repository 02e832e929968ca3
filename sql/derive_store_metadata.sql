/* Chunk store metadata derived from a staged store: modules.jsonl and store.json.

   Parameters: staging_dir (holding the chunk parts, deleted_ids.parquet and files.parquet),
   dimension (the embeddings' length), embedder (a label of
   what produced the embeddings; it names the model and, for static models, its hash) and
   embedder_sha256 (the model bytes' SHA-256; NULL for imported vectors) and chunker (what cut
   the chunks, codeintel/store.py chunker_signature; NULL for imports: an ingest reuses an
   unchanged file's chunks only from a store with the same chunker).  Shared by ingestion and by imports of a
   user's own chunks, so both stores look the same to every view. */

-- One module per directory holding ingested files; Python packages get their dotted name.
COPY (
    WITH placed AS (
        SELECT
            f.uri,
            f.language,
            coalesce(nullif(regexp_extract(f.uri, '^(.*)/[^/]*$', 1), ''), '') AS directory
        FROM read_parquet(getvariable('staging_dir') || 'files.parquet') AS f
        WHERE f.status = 'chunked'
    ),
    -- An empty __init__.py is skipped as a chunk source but still marks a package.
    packages AS (
        SELECT DISTINCT coalesce(nullif(regexp_extract(f.uri, '^(.*)/[^/]*$', 1), ''), '') AS directory
        FROM read_parquet(getvariable('staging_dir') || 'files.parquet') AS f
        WHERE regexp_matches(f.uri, '(^|/)__init__\.py$')
    ),
    -- files.parquet counts each file's chunks and lines (the ingest and import scripts).
    metrics AS (
        SELECT f.uri, f.chunk_count, f.line_count
        FROM read_parquet(getvariable('staging_dir') || 'files.parquet') AS f
        WHERE f.chunk_count > 0
    )
    SELECT
        CASE
            WHEN p.directory = '' THEN '(root)'
            WHEN k.directory IS NOT NULL THEN replace(p.directory, '/', '.')
            ELSE p.directory
        END::VARCHAR AS module,
        CASE WHEN p.directory = '' THEN '' ELSE p.directory || '/' END::VARCHAR AS prefix,
        list_sort(list_distinct(
            list(p.language)
            || CASE WHEN k.directory IS NOT NULL THEN ['python-package'] ELSE [] END
            || CASE WHEN regexp_matches(p.directory, '(^|/)(tests?|testing|__tests__)(/|$)')
                    THEN ['tests'] ELSE [] END
        ))::VARCHAR[] AS tags,
        count(*)::BIGINT AS file_count,
        sum(m.chunk_count)::BIGINT AS chunk_count,
        sum(m.line_count)::BIGINT AS line_count
    FROM placed AS p
    LEFT JOIN packages AS k ON k.directory = p.directory
    JOIN metrics AS m ON m.uri = p.uri
    GROUP BY p.directory, k.directory
    ORDER BY prefix
) TO (getvariable('staging_dir') || 'modules.jsonl') (FORMAT json);

-- The fingerprint covers what an index depends on: ids, contents and the embedder.  The ids our
-- chunker gives are already hashes of uri, byte range and content (udfs/chunking.py chunk_id),
-- so an ingested store is fingerprinted by its ids alone (no content is read: this runs on every
-- incremental ingest); an imported store's ids are the user's, so its contents count too.
COPY (
    WITH live AS (
        SELECT s.*
        FROM read_parquet(getvariable('staging_dir') || 'chunks*.parquet') AS s
        ANTI JOIN read_parquet(getvariable('staging_dir') || 'deleted_ids.parquet') AS d ON d.id = s.id
    )
    SELECT
        md5(getvariable('embedder') || '|' || string_agg(
            CASE WHEN getvariable('chunker') IS NULL THEN s.id::VARCHAR || ':' || md5(s.content)
                 ELSE s.id::VARCHAR END,
            ',' ORDER BY s.id)) AS fingerprint,
        count(*)::BIGINT AS chunk_count,
        getvariable('dimension')::INTEGER AS dimension,
        getvariable('embedder')::VARCHAR AS embedder,
        getvariable('embedder_sha256')::VARCHAR AS embedder_sha256,
        getvariable('chunker')::VARCHAR AS chunker,
        strftime(now() AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS created_at
    FROM live AS s
) TO (getvariable('staging_dir') || 'store.json') (FORMAT json);
