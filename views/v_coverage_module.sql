/* v_coverage_module: per run and module, how much of the module the run's queries reach:
   the module's chunks, how many the FAISS index holds, how many appear in any of the run's
   top-k lists (pool), and that share of its chunks.  Chunks are placed in modules by
   chunk_modules (longest prefix); every module appears for every run, reached or not. */
CREATE OR REPLACE VIEW v_coverage_module AS
WITH module_chunks AS (
    SELECT cm.module AS module, j.id AS chunk_id, j.indexed AS indexed
    FROM v_faiss_join AS j
    JOIN chunk_modules AS cm ON cm.chunk_id = j.id
),
module_totals AS (
    SELECT
        m.module AS module,
        count(mc.chunk_id) AS chunks,
        count(mc.chunk_id) FILTER (mc.indexed) AS indexed_chunks
    FROM modules AS m
    LEFT JOIN module_chunks AS mc ON mc.module = m.module
    GROUP BY m.module
),
retrieved AS (
    SELECT r.run_id AS run_id, mc.module AS module, count(*) AS retrieved_chunks
    FROM (SELECT DISTINCT p.run_id AS run_id, p.chunk_id AS chunk_id FROM pool AS p) AS r
    JOIN module_chunks AS mc ON mc.chunk_id = r.chunk_id
    GROUP BY r.run_id, mc.module
)
SELECT
    u.run_id::VARCHAR AS run_id,
    u.channel::VARCHAR AS channel,
    u.created_at::TIMESTAMP AS created_at,
    t.module::VARCHAR AS module,
    t.chunks::BIGINT AS chunks,
    t.indexed_chunks::BIGINT AS indexed_chunks,
    coalesce(r.retrieved_chunks, 0)::BIGINT AS retrieved_chunks,
    CASE WHEN t.chunks > 0 THEN coalesce(r.retrieved_chunks, 0) / t.chunks END::DOUBLE AS share_retrieved
FROM v_runs AS u
CROSS JOIN module_totals AS t
LEFT JOIN retrieved AS r ON r.run_id = u.run_id AND r.module = t.module;
