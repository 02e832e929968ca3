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
     previous_store       the current store version's directory (ending with a separator) whose
                          embeddings may be reused, or NULL: no store yet, or one another embedder
                          made (codeintel/store.py decides, and logs why)
     reuse_files          true when previous_store's files.parquet records file state (size, mtime,
                          content_md5, listed_at) and its chunks were cut by this chunker: an
                          unchanged file then takes its chunks, embeddings included, from
                          previous_store without being re-chunked
   Incremental: a candidate whose size and mtime equal its previous row is neither read nor
   chunked (unless the previous listing saw it within 2 s of a change: mtimes have 1 s
   resolution, so such a file may have changed again in the same second, and is hashed); any
   other candidate is read and hashed, and an unchanged hash also reuses the previous chunks.
   A chunk of a changed file whose id (and symbols) the previous store holds reuses its
   embedding: the id is a hash of uri, byte range and content, so only new ids are embedded.
   Leaves for write_chunk_store.sql the temp view staged_chunks (every chunk: a full write) and
   staged_new_chunks and staged_deleted_ids (the chunks the previous store lacks, and the ids it
   holds that are gone: an incremental write); the caller picks the write and publishes the
   staging directory only when that and derive_store_metadata.sql have completed.
   Returns the number of files per status, how many of them were reused unread or by hash, and
   (the same on every row) the chunks taken from unchanged files, the embeddings reused by id,
   the chunks embedded, what an incremental write would add, hide and find moved, and whether the chunks are the previous store's (store_unchanged). */

SELECT CASE WHEN count(*) = 0 THEN error(
           'ingest: no files under ' || getvariable('repo_root')
           || ' match the include globs; check the repository path and --include')
       END AS guard_files_exist
FROM glob(getvariable('include_globs'));

CREATE OR REPLACE TEMP TABLE ingest_ignored AS
SELECT
    unnest(getvariable('ignored_uris')::VARCHAR[]) AS uri,
    unnest(getvariable('ignored_statuses')::VARCHAR[]) AS status;

-- The previous store's file state; query() reads it only when there is one to reuse (a
-- read_parquet of a NULL path fails while binding, even in a branch that is never taken).
CREATE OR REPLACE TEMP TABLE ingest_previous_files AS
SELECT *
FROM query(CASE WHEN coalesce(getvariable('reuse_files'), false) THEN
    'SELECT uri, size_bytes, status, mtime, content_md5, listed_at
     FROM read_parquet(getvariable(''previous_store'') || ''files.parquet'')'
ELSE
    'SELECT NULL::VARCHAR AS uri, NULL::BIGINT AS size_bytes, NULL::VARCHAR AS status, NULL::TIMESTAMP AS mtime,
            NULL::VARCHAR AS content_md5, NULL::TIMESTAMP AS listed_at
     WHERE false'
END);

CREATE OR REPLACE TEMP TABLE ingest_files AS
WITH listing AS (
    -- last_modified comes from the directory listing (a stat), not from reading the file.
    -- now() is this statement's start, before any file is listed: a file changed after the
    -- listing has an mtime at or after listed_at.
    SELECT
        filename AS path,
        substr(filename, length(getvariable('repo_root')) + 1) AS uri,
        size AS size_bytes,
        make_timestamp(epoch_us(last_modified)) AS mtime,
        make_timestamp(epoch_us(now())) AS listed_at
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
        l.mtime,
        l.listed_at,
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
           NULL::TIMESTAMP AS mtime, any_value(l.listed_at) AS listed_at,
           NULL::VARCHAR AS language, any_value(g.status) AS status
    FROM inside_ignored AS d
    JOIN listing AS l ON l.uri = d.uri
    JOIN ingest_ignored AS g ON g.uri = d.directory
    GROUP BY d.directory
)
SELECT *, NULL::VARCHAR AS content_md5, false AS reused, false AS was_read FROM files
UNION ALL BY NAME
SELECT *, NULL::VARCHAR AS content_md5, false AS reused, false AS was_read FROM directories;

SELECT CASE WHEN count(*) FILTER (WHERE status = 'candidate') = 0 THEN error(
           'ingest: nothing to ingest under ' || getvariable('repo_root') || ': '
           || count(*) || ' files found, none is a non-empty source file of a known language under '
           || getvariable('max_file_bytes') || ' bytes that .gitignore and setting ingest_exclude leave in')
       END AS guard_candidates_exist
FROM ingest_files;

-- Unchanged by size and mtime: the previous status, hash and chunks stand, the file is not read.
-- Trusted only when the previous listing came 2 s or more after the mtime (see the header).
UPDATE ingest_files AS f
SET status = p.status, content_md5 = p.content_md5, reused = true
FROM ingest_previous_files AS p
WHERE f.status = 'candidate'
  AND p.uri = f.uri
  AND p.size_bytes = f.size_bytes
  AND p.mtime = f.mtime
  AND p.mtime + INTERVAL 2 SECOND <= p.listed_at
  AND p.content_md5 IS NOT NULL
  AND p.status IN ('chunked', 'skipped: binary', 'skipped: not UTF-8');

-- Only candidates are read: listing first keeps .git packs and large files off the disk path.
SET VARIABLE ingest_candidates = (
    SELECT list(path ORDER BY path) FROM ingest_files WHERE status = 'candidate'
);

-- read_blob refuses an empty list (every candidate unchanged), hence query().
CREATE OR REPLACE TEMP TABLE ingest_texts AS
WITH blobs AS (
    SELECT *
    FROM query(CASE WHEN getvariable('ingest_candidates') IS NULL THEN
        'SELECT NULL::VARCHAR AS filename, NULL::BLOB AS content WHERE false'
    ELSE
        'SELECT filename, content FROM read_blob(getvariable(''ingest_candidates''))'
    END)
),
hashed AS (
    SELECT f.uri, f.language, b.content AS raw, md5(b.content) AS content_md5, p.status AS previous_status,
           p.content_md5 AS previous_md5
    FROM blobs AS b
    JOIN ingest_files AS f ON f.path = b.filename
    LEFT JOIN ingest_previous_files AS p ON p.uri = f.uri
),
decoded AS (
    SELECT *,
           -- Same bytes as the previous ingest read: its status and chunks stand.
           coalesce(content_md5 = previous_md5
                    AND previous_status IN ('chunked', 'skipped: binary', 'skipped: not UTF-8'), false) AS reused,
           try(decode(raw)) AS text
    FROM hashed
)
SELECT
    d.uri,
    d.language,
    CASE WHEN d.reused THEN NULL ELSE d.text END AS text,
    d.content_md5,
    d.reused,
    CASE
        WHEN d.reused THEN d.previous_status
        -- An invalid UTF-8 blob casts to text with \xNN escapes; a NUL byte marks binary data.
        WHEN d.text IS NULL AND contains(d.raw::VARCHAR, '\x00') THEN 'skipped: binary'
        WHEN d.text IS NULL THEN 'skipped: not UTF-8'
        WHEN contains(d.text, chr(0)) THEN 'skipped: binary'
        ELSE 'chunked'
    END AS status
FROM decoded AS d;

UPDATE ingest_files AS f
SET status = t.status, content_md5 = t.content_md5, reused = t.reused, was_read = true
FROM ingest_texts AS t
WHERE f.uri = t.uri;

SELECT CASE WHEN count(*) FILTER (WHERE status = 'chunked') = 0 THEN error(
           'ingest: nothing to ingest under ' || getvariable('repo_root')
           || ': every candidate file is binary or not UTF-8')
       END AS guard_texts_exist
FROM ingest_files;

-- Only changed files are chunked.
CREATE OR REPLACE TEMP TABLE ingest_chunks AS
SELECT
    t.uri,
    t.language,
    unnest(chunk_code(t.uri, t.text, t.language, getvariable('max_chunk_chars')), recursive := true)
FROM ingest_texts AS t
WHERE t.status = 'chunked' AND NOT t.reused;

-- The previous store's chunks: every part but the deleted ids (udfs/store_schema.py), read
-- lazily: the statements here read its id, uri, symbols and line columns, and only a full write
-- (write_chunk_store.sql) reads its embeddings and contents.
CREATE OR REPLACE TEMP VIEW ingest_previous_chunks AS
SELECT p.*
FROM query(CASE WHEN getvariable('previous_store') IS NOT NULL THEN
    'SELECT s.* REPLACE (s.embedding::FLOAT[] AS embedding)
     FROM read_parquet(getvariable(''previous_store'') || ''chunks*.parquet'') AS s
     ANTI JOIN read_parquet(getvariable(''previous_store'') || ''deleted_ids.parquet'') AS d ON d.id = s.id'
ELSE
    'SELECT *, NULL::FLOAT[] AS embedding FROM ingest_chunks WHERE false'
END) AS p;

-- Unchanged files' chunks, embeddings included, as the previous store holds them.
CREATE OR REPLACE TEMP VIEW ingest_reused_chunks AS
SELECT p.*
FROM ingest_previous_chunks AS p
WHERE coalesce(getvariable('reuse_files'), false)
  AND p.uri IN (SELECT uri FROM ingest_files WHERE reused AND status = 'chunked');

-- Changed files' chunks the previous store already holds (same id, so same uri, byte range and
-- content; same symbols, which embed_chunk also reads): their embedding is reused bit for bit,
-- and when their lines are the same too (an edit before them can keep the bytes but move the
-- lines) the stored row stands as it is.
CREATE OR REPLACE TEMP TABLE ingest_known_chunks AS
SELECT
    c.id,
    c.start_line = p.start_line AND c.end_line = p.end_line
        AND c.kind IS NOT DISTINCT FROM p.kind AND c.language IS NOT DISTINCT FROM p.language AS same_row
FROM ingest_previous_chunks AS p
JOIN ingest_chunks AS c ON c.id = p.id AND c.symbols IS NOT DISTINCT FROM p.symbols;

SELECT error('ingest: chunk id ' || id || ' is shared by ' || string_agg(uri, ', ')
             || '; report this collision, it breaks id stability')
FROM (SELECT id, uri FROM ingest_chunks UNION ALL SELECT id, uri FROM ingest_reused_chunks)
GROUP BY id
HAVING count(*) > 1
LIMIT 1;

-- Only the chunks nothing can be reused for are embedded, here, in a statement of their own:
-- it alone runs with DuckDB on one thread (embed_chunk owns the cores), and sorting and
-- compressing the store in write_chunk_store.sql get every thread.  embed_chunk also counts
-- the names a chunk defines (static models), which questions about code most often ask for.
CREATE OR REPLACE TEMP TABLE ingest_embeddings AS
SELECT c.id, embed_chunk(c.content, c.symbols)::FLOAT[] AS embedding
FROM ingest_chunks AS c
ANTI JOIN ingest_known_chunks AS k ON k.id = c.id;

-- A full write (write_chunk_store.sql) writes this view as one part: unchanged files' chunks
-- as stored, the others with their reused or new embedding.
CREATE OR REPLACE TEMP VIEW staged_chunks AS
SELECT
    r.id, r.uri, r.start_byte, r.end_byte, r.start_line, r.end_line, r.language, r.kind, r.symbols,
    r.content, r.embedding
FROM ingest_reused_chunks AS r
UNION ALL
SELECT
    c.id, c.uri, c.start_byte, c.end_byte, c.start_line, c.end_line, c.language, c.kind, c.symbols,
    c.content, coalesce(e.embedding, p.embedding) AS embedding
FROM ingest_chunks AS c
LEFT JOIN ingest_embeddings AS e ON e.id = c.id
LEFT JOIN (SELECT p.id, p.embedding
           FROM ingest_previous_chunks AS p
           SEMI JOIN ingest_known_chunks AS k ON k.id = p.id) AS p ON p.id = c.id;

-- An incremental write adds these rows as a new part beside the previous store's parts: the
-- changed files' chunks the previous store does not hold.
CREATE OR REPLACE TEMP VIEW staged_new_chunks AS
SELECT
    c.id, c.uri, c.start_byte, c.end_byte, c.start_line, c.end_line, c.language, c.kind, c.symbols,
    c.content, e.embedding
FROM ingest_chunks AS c
JOIN ingest_embeddings AS e ON e.id = c.id
ANTI JOIN ingest_known_chunks AS k ON k.id = c.id;

-- ... and hides these: the previous chunks of every file not reused (changed, deleted, or no
-- longer chunked) that the changed files do not hold any more.
CREATE OR REPLACE TEMP TABLE staged_deleted_ids AS
SELECT p.id
FROM ingest_previous_chunks AS p
WHERE p.uri NOT IN (SELECT uri FROM ingest_files WHERE reused AND status = 'chunked'
                    AND coalesce(getvariable('reuse_files'), false))
  AND p.id NOT IN (SELECT id FROM ingest_known_chunks);

-- The file state columns come last: views/files.sql reads the first six by name.
COPY (
    WITH chunks AS (
        SELECT uri, end_line FROM ingest_chunks
        UNION ALL
        SELECT uri, end_line FROM ingest_reused_chunks
    )
    SELECT
        f.uri::VARCHAR AS uri,
        f.language::VARCHAR AS language,
        f.size_bytes::BIGINT AS size_bytes,
        f.status::VARCHAR AS status,
        count(c.uri)::BIGINT AS chunk_count,
        coalesce(max(c.end_line), 0)::BIGINT AS line_count,
        f.mtime::TIMESTAMP AS mtime,
        f.content_md5::VARCHAR AS content_md5,
        f.listed_at::TIMESTAMP AS listed_at
    FROM ingest_files AS f
    LEFT JOIN chunks AS c ON c.uri = f.uri
    GROUP BY f.uri, f.language, f.size_bytes, f.status, f.mtime, f.content_md5, f.listed_at
    ORDER BY f.uri
) TO (getvariable('staging_dir') || 'files.parquet') (FORMAT parquet, COMPRESSION zstd);

SELECT
    status,
    count(*) AS files,
    count(*) FILTER (WHERE reused) AS files_reused,
    count(*) FILTER (WHERE reused AND NOT was_read) AS files_unread,
    (SELECT count(*) FROM ingest_reused_chunks) AS chunks_from_unchanged_files,
    (SELECT count(*) FROM ingest_known_chunks) AS embeddings_reused,
    (SELECT count(*) FROM ingest_embeddings) AS chunks_embedded,
    -- What an incremental write would add and hide; a known chunk whose lines moved (not
    -- same_row) cannot stand as stored, and makes the write a full one.
    (SELECT count(*) FROM staged_new_chunks) AS chunks_added,
    (SELECT count(*) FROM staged_deleted_ids) AS chunks_deleted,
    (SELECT count(*) FROM ingest_known_chunks WHERE NOT same_row) AS chunks_moved,
    -- Every chunked file is an unchanged one, and as many as before: the previous store's chunks,
    -- so its fingerprint; the caller keeps it without writing a version.
    (SELECT coalesce(getvariable('reuse_files'), false)
            AND count(*) FILTER (WHERE f.status = 'chunked' AND NOT f.reused) = 0
            AND count(*) FILTER (WHERE f.status = 'chunked')
                = (SELECT count(*) FROM ingest_previous_files AS p WHERE p.status = 'chunked')
     FROM ingest_files AS f) AS store_unchanged
FROM ingest_files
GROUP BY status
ORDER BY status;
