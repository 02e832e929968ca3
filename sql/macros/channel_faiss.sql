/* channel_faiss(k := 10, queries := 'queries') -> query_id VARCHAR, rank INTEGER, chunk_id BIGINT,
   score DOUBLE: the vector-search retrieval channel for evaluation.  For every row of the query
   table, its top k chunks by faiss_topk on the published FAISS index, rank 1 the best and score
   higher-is-better, as channel_bm25 and channel_hybrid return them, so a report can UNION them.
     k        hits per query, at least 1 (default 10)
     queries  name of the query table, with query_id and embedding (default 'queries', made by
              sql/load_queries.sql); read with query_table(), because DuckDB binds a macro's
              tables when the macro is created and this one only exists once the script ran. */

CREATE OR REPLACE TEMP MACRO channel_faiss(k := 10, queries := 'queries') AS TABLE
WITH checked AS (
    SELECT check_argument(k, 'channel_faiss: k', k >= 1, 'be at least 1', '; pass k := 10 for a top-10')::INTEGER AS k
),
hits AS (
    -- One faiss_topk call per DuckDB chunk of queries, never one statement per query.
    SELECT q.query_id::VARCHAR AS query_id, unnest(faiss_topk(q.embedding, c.k)) AS hit
    FROM query_table(queries) AS q
    CROSS JOIN checked AS c
)
SELECT
    h.query_id AS query_id,
    h.hit.rank::INTEGER AS rank,
    h.hit.chunk_id::BIGINT AS chunk_id,
    h.hit.score::DOUBLE AS score
FROM hits AS h;
