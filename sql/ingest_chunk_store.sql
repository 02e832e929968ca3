/* Chunk store pipeline: repository files -> AST chunks -> embeddings -> zstd Parquet.

   Parameters (DuckDB variables, set by `python bootstrap.py ingest`):
     repo_root            absolute repository path, ending with a separator
     include_globs        absolute globs of the files to consider
     ignored_uris         entries that .gitignore or setting ingest_exclude ignore (udfs/ignore.py,
                          one walk in Python); a directory's uri ends with '/'
     ignored_statuses     why each is ignored, aligned with ignored_uris
     max_file_bytes       larger files are skipped
     max_chunk_chars      chunk budget in non-whitespace characters
     staging_dir          where files.parquet is written
   Leaves the temp view staged_chunks for write_chunk_store.sql; the caller publishes the
   staging directory only when that and derive_store_metadata.sql have completed.
   Returns the number of files per status. */

SELECT CASE WHEN count(*) = 0 THEN error(
           'ingest: no files under ' || getvariable('repo_root')
           || ' match the include globs; check the repository path and --include')
       END AS guard_files_exist
FROM glob(getvariable('include_globs'));

CREATE OR REPLACE TEMP TABLE ingest_ignored AS
SELECT
    unnest(getvariable('ignored_uris')::VARCHAR[]) AS uri,
    unnest(getvariable('ignored_statuses')::VARCHAR[]) AS status;

CREATE OR REPLACE TEMP TABLE ingest_files AS
WITH listing AS (
    SELECT
        filename AS path,
        substr(filename, length(getvariable('repo_root')) + 1) AS uri,
        size AS size_bytes
    FROM read_blob(getvariable('include_globs'))
),
-- Each listed file's directories as 'a/', 'a/b/': an ignored directory is then found by a hash join.
ancestors AS (
    SELECT
        uri,
        unnest(list_transform(range(1, len(string_split(uri, '/'))),
                              i -> array_to_string(string_split(uri, '/')[:i], '/') || '/')) AS directory
    FROM listing
),
-- As git does, an ignored directory is one entry; its contents are neither read nor listed.
-- The walk never enters an ignored directory, so each file has at most one ignored ancestor.
inside_ignored AS (
    SELECT a.uri, min(g.uri) AS directory
    FROM ancestors AS a
    JOIN ingest_ignored AS g ON g.uri = a.directory
    GROUP BY a.uri
),
files AS (
    SELECT
        l.path,
        l.uri,
        l.size_bytes,
        language_of(l.uri) AS language,
        CASE
            WHEN g.status IS NOT NULL THEN g.status
            WHEN language_of(l.uri) IS NULL THEN 'skipped: no known language'
            WHEN l.size_bytes > getvariable('max_file_bytes') THEN 'skipped: over size limit'
            WHEN l.size_bytes = 0 THEN 'skipped: empty'
            ELSE 'candidate'
        END AS status
    FROM listing AS l
    LEFT JOIN ingest_ignored AS g ON g.uri = l.uri
    WHERE l.uri NOT IN (SELECT uri FROM inside_ignored)
),
directories AS (
    SELECT NULL::VARCHAR AS path, d.directory AS uri, sum(l.size_bytes) AS size_bytes,
           NULL::VARCHAR AS language, any_value(g.status) AS status
    FROM inside_ignored AS d
    JOIN listing AS l ON l.uri = d.uri
    JOIN ingest_ignored AS g ON g.uri = d.directory
    GROUP BY d.directory
)
SELECT * FROM files
UNION ALL
SELECT * FROM directories;

SELECT CASE WHEN count(*) FILTER (WHERE status = 'candidate') = 0 THEN error(
           'ingest: nothing to ingest under ' || getvariable('repo_root') || ': '
           || count(*) || ' files found, none is a non-empty source file of a known language under '
           || getvariable('max_file_bytes') || ' bytes that .gitignore and setting ingest_exclude leave in')
       END AS guard_candidates_exist
FROM ingest_files;

-- Only candidates are read: listing first keeps .git packs and large files off the disk path.
SET VARIABLE ingest_candidates = (
    SELECT list(path ORDER BY path) FROM ingest_files WHERE status = 'candidate'
);

CREATE OR REPLACE TEMP TABLE ingest_texts AS
WITH decoded AS (
    SELECT f.uri, f.language, b.content AS raw, try(decode(b.content)) AS text
    FROM read_blob(getvariable('ingest_candidates')) AS b
    JOIN ingest_files AS f ON f.path = b.filename
)
SELECT
    d.uri,
    d.language,
    d.text,
    CASE
        -- An invalid UTF-8 blob casts to text with \xNN escapes; a NUL byte marks binary data.
        WHEN d.text IS NULL AND contains(d.raw::VARCHAR, '\x00') THEN 'skipped: binary'
        WHEN d.text IS NULL THEN 'skipped: not UTF-8'
        WHEN contains(d.text, chr(0)) THEN 'skipped: binary'
        ELSE 'chunked'
    END AS status
FROM decoded AS d;

UPDATE ingest_files AS f
SET status = t.status
FROM ingest_texts AS t
WHERE f.uri = t.uri;

SELECT CASE WHEN count(*) FILTER (WHERE status = 'chunked') = 0 THEN error(
           'ingest: nothing to ingest under ' || getvariable('repo_root')
           || ': every candidate file is binary or not UTF-8')
       END AS guard_texts_exist
FROM ingest_texts;

CREATE OR REPLACE TEMP TABLE ingest_chunks AS
SELECT
    t.uri,
    t.language,
    unnest(chunk_code(t.uri, t.text, t.language, getvariable('max_chunk_chars')), recursive := true)
FROM ingest_texts AS t
WHERE t.status = 'chunked';

SELECT error('ingest: chunk id ' || id || ' is shared by ' || string_agg(uri, ', ')
             || '; report this collision, it breaks id stability')
FROM ingest_chunks
GROUP BY id
HAVING count(*) > 1
LIMIT 1;

-- Embedded lazily: write_chunk_store.sql streams this view to Parquet.  embed_chunk also counts
-- the names a chunk defines (static models), which questions about code most often ask for.
CREATE OR REPLACE TEMP VIEW staged_chunks AS
SELECT
    c.id, c.uri, c.start_byte, c.end_byte, c.start_line, c.end_line, c.language, c.kind, c.symbols,
    c.content,
    embed_chunk(c.content, c.symbols) AS embedding
FROM ingest_chunks AS c;

COPY (
    SELECT
        f.uri::VARCHAR AS uri,
        f.language::VARCHAR AS language,
        f.size_bytes::BIGINT AS size_bytes,
        f.status::VARCHAR AS status,
        count(c.id)::BIGINT AS chunk_count,
        coalesce(max(c.end_line), 0)::BIGINT AS line_count
    FROM ingest_files AS f
    LEFT JOIN ingest_chunks AS c ON c.uri = f.uri
    GROUP BY f.uri, f.language, f.size_bytes, f.status
    ORDER BY f.uri
) TO (getvariable('staging_dir') || 'files.parquet') (FORMAT parquet, COMPRESSION zstd);

SELECT status, count(*) AS files
FROM ingest_files
GROUP BY status
ORDER BY status;
