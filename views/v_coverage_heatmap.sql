/* v_coverage_heatmap: module by channel, for the latest run of each channel: the share of
   the module's chunks in any top-k, as a number and as a bar() for text reports (NULL where
   the channel has no run), with the module's chunks, indexed chunks and chunks no run has
   ever returned. */
CREATE OR REPLACE VIEW v_coverage_heatmap AS
WITH latest_runs AS (
    SELECT u.run_id AS run_id
    FROM v_runs AS u
    QUALIFY row_number() OVER (PARTITION BY u.channel ORDER BY u.created_at DESC, u.run_id DESC) = 1
),
shares AS (
    SELECT
        c.module AS module,
        any_value(c.chunks) AS chunks,
        any_value(c.indexed_chunks) AS indexed_chunks,
        max(c.share_retrieved) FILTER (c.channel = 'faiss') AS faiss_share,
        max(c.share_retrieved) FILTER (c.channel = 'bm25') AS bm25_share,
        max(c.share_retrieved) FILTER (c.channel = 'hybrid') AS hybrid_share
    FROM v_coverage_module AS c
    JOIN latest_runs AS l ON l.run_id = c.run_id
    GROUP BY c.module
),
never AS (
    SELECT n.module AS module, count(*) AS never_retrieved
    FROM v_coverage_never_retrieved AS n
    GROUP BY n.module
)
SELECT
    s.module::VARCHAR AS module,
    s.chunks::BIGINT AS chunks,
    s.indexed_chunks::BIGINT AS indexed_chunks,
    coalesce(n.never_retrieved, 0)::BIGINT AS never_retrieved,
    s.faiss_share::DOUBLE AS faiss_share,
    bar(s.faiss_share, 0, 1, 20)::VARCHAR AS faiss_bar,
    s.bm25_share::DOUBLE AS bm25_share,
    bar(s.bm25_share, 0, 1, 20)::VARCHAR AS bm25_bar,
    s.hybrid_share::DOUBLE AS hybrid_share,
    bar(s.hybrid_share, 0, 1, 20)::VARCHAR AS hybrid_bar
FROM shares AS s
LEFT JOIN never AS n ON n.module = s.module;
