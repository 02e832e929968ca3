/* files: every repository file ingestion looked at (outside ignored directories), its status
   ('chunked' or 'skipped: <reason>'), size and chunk count. */
CREATE OR REPLACE VIEW files AS
SELECT
    f.uri::VARCHAR AS uri,
    f.language::VARCHAR AS language,
    f.size_bytes::BIGINT AS size_bytes,
    f.status::VARCHAR AS status,
    f.chunk_count::BIGINT AS chunk_count,
    f.line_count::BIGINT AS line_count
FROM read_parquet('store/CURRENT/files.parquet') AS f;
