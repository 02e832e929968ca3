/* v_qrels_unresolved: audit, expected empty: judgments naming no chunk of the current store
   (an unknown chunk id, or a uri and range no chunk overlaps), stale since a re-ingest. */
CREATE OR REPLACE VIEW v_qrels_unresolved AS
SELECT
    q.query_id::VARCHAR AS query_id,
    q.chunk_id::BIGINT AS chunk_id,
    q.uri::VARCHAR AS uri,
    q.start_line::INTEGER AS start_line,
    q.end_line::INTEGER AS end_line,
    q.grade::INTEGER AS grade
FROM read_parquet('eval/qrels.parquet') AS q
WHERE NOT EXISTS (
    SELECT 1
    FROM chunks AS c
    WHERE (q.chunk_id IS NOT NULL AND c.id = q.chunk_id)
       OR (q.chunk_id IS NULL AND c.uri = q.uri
           AND c.start_line <= coalesce(q.end_line, c.end_line)
           AND c.end_line >= coalesce(q.start_line, c.start_line))
);
