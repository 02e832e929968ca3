/* faiss_search(q, k := 10, k_factor := 1.0) -> rank INTEGER, chunk_id BIGINT, score FLOAT:
   the k nearest chunks to ONE query vector q (FLOAT[] or FLOAT[n], e.g. embed(...)) on the
   published FAISS index, best first, over the UDFs of udfs/faiss_search.py.  score is a
   similarity, higher is better (for an 'l2' index, the negated squared distance).
     q         the query vector; an empty q, or a zero q on an 'ip' or 'cos' index (faiss_topk's
               error), is an error
     k         hits, at least 1 (default 10); k above the store size returns every chunk, for
               every family; k and k * k_factor at most 2147483647
     k_factor  at least 1 (default 1.0); above 1 the index fetches ceil(k * k_factor)
               candidates and exact_rerank keeps the exact top k of them, scored with the
               index's metric from the stored vectors; worth it for ivf_pq, where PQ distances
               are approximate
       SELECT * FROM faiss_search(embed('parse a config file'), k := 10);
   For a batch of queries, LATERAL works: DuckDB decorrelates it, de-duplicates the query
   vectors and searches them a chunk (up to 2048) at a time (2 index.search calls for 1000):
       SELECT q.id, r.* FROM queries AS q, LATERAL faiss_search(q.embedding, k := 10) AS r;
   or call the UDFs in the select list and unnest there, one index.search per chunk of rows:
       SELECT q.id, unnest(faiss_topk(q.embedding, 10), recursive := true)
       FROM queries AS q;
       SELECT q.id, unnest(exact_rerank(q.embedding,
                                        [h.chunk_id FOR h IN faiss_topk(q.embedding, 40)],
                                        10, 'ip'), recursive := true)
       FROM queries AS q;
   TEMP, like every macro here, so catalog.duckdb stays openable by a stock DuckDB client. */

CREATE OR REPLACE TEMP MACRO faiss_search(q, k := 10, k_factor := 1.0) AS TABLE
SELECT
    hit.rank AS rank,
    hit.chunk_id AS chunk_id,
    hit.score AS score
FROM (
    -- Checked here, in this order, before any cast or product can overflow (DuckDB would name
    -- neither the macro nor the argument); 2147483647 is the most an INTEGER k of faiss_topk
    -- holds.  k itself may exceed the store: faiss_topk returns every vector then.
    -- k * k_factor is computed in DOUBLE, which cannot overflow.  check_argument raises or
    -- returns its (non-NULL) value, so these arms are never taken; being CASE arms, they run
    -- one after another and the first bad argument is the one named.
    SELECT unnest(CASE
        WHEN check_argument(k, 'faiss_search: k', k >= 1, 'be at least 1', '') IS NULL
            THEN NULL
        WHEN check_argument(k, 'faiss_search: k', k <= 2147483647, 'be at most 2147483647',
                            '; ask for fewer hits (k above the store size already returns every chunk)') IS NULL
            THEN NULL
        WHEN check_argument(k_factor, 'faiss_search: k_factor', k_factor >= 1, 'be at least 1', '') IS NULL
            THEN NULL
        WHEN check_argument(k::VARCHAR || ' * ' || k_factor::VARCHAR, 'faiss_search: k * k_factor',
                            k::DOUBLE * k_factor::DOUBLE <= 2147483647, 'be at most 2147483647 candidates',
                            '; lower k or k_factor') IS NULL
            THEN NULL
        WHEN q IS NOT NULL AND len(q) = 0
            THEN error('faiss_search: q is empty; pass a query vector such as embed(''text'')')
        -- A zero q is refused by faiss_topk itself under 'ip' and 'cos' (every score 0); the
        -- check is not repeated here: asking faiss_index_info() for the metric costs a Python
        -- UDF call per statement, ~5 ms of a one-query search (bench/bench_search.py).
        WHEN k_factor = 1
            THEN faiss_topk(q, CAST(k AS INTEGER))
        ELSE exact_rerank(
            q,
            [candidate.chunk_id FOR candidate IN
                faiss_topk(q, CAST(ceil(k::DOUBLE * k_factor::DOUBLE) AS INTEGER))],
            CAST(k AS INTEGER),
            NULL)
    END) AS hit
)
ORDER BY rank;
