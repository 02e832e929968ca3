/* v_qrels_chunks: the relevance judgments (eval/qrels.parquet, from sql/load_queries.sql) as
   (query_id, chunk_id, grade): a judgment by chunk id applies to that chunk, one by uri and
   line range to every chunk of the file overlapping the range (the whole file without
   lines); a chunk judged more than once for a query keeps its highest grade. */
CREATE OR REPLACE VIEW v_qrels_chunks AS
WITH judged AS (
    SELECT q.query_id AS query_id, q.chunk_id AS chunk_id, q.grade AS grade
    FROM read_parquet('eval/qrels.parquet') AS q
    WHERE q.chunk_id IS NOT NULL
    UNION ALL
    SELECT q.query_id AS query_id, c.id AS chunk_id, q.grade AS grade
    FROM read_parquet('eval/qrels.parquet') AS q
    JOIN chunks AS c
        ON c.uri = q.uri
        AND c.start_line <= coalesce(q.end_line, c.end_line)
        AND c.end_line >= coalesce(q.start_line, c.start_line)
    WHERE q.chunk_id IS NULL
)
SELECT
    j.query_id::VARCHAR AS query_id,
    j.chunk_id::BIGINT AS chunk_id,
    max(j.grade)::INTEGER AS grade
FROM judged AS j
GROUP BY j.query_id, j.chunk_id;
