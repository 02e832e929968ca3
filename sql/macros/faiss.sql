/* FAISS as SQL: table macros over the UDFs of udfs/faiss_search.py and udfs/metrics.py.
   TEMP, so catalog.duckdb stays openable by a stock DuckDB client; bootstrap applies them
   after registering the UDFs.

   faiss_search(q, k := 10, k_factor := 1.0) -> rank INTEGER, chunk_id BIGINT, score FLOAT
     The k nearest chunks to ONE query vector q (FLOAT[] or FLOAT[n], e.g. embed(...)), best
     first.  score is a similarity, higher is better (for an 'l2' index, the negated squared
     distance).  With k_factor > 1 the index fetches ceil(k * k_factor) candidates and
     exact_rerank keeps the exact top k of them, scored with the index's metric from the
     stored vectors; worth it for ivf_pq, where PQ distances are approximate.  k above the
     store size returns every chunk, for every family; k and k * k_factor at most 2147483647.
     An empty q, or a zero q on an 'ip' or 'cos' index (faiss_topk's error), is an error.
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

   faiss_index_info()  one row: the published index as this connection loaded it.
   faiss_metrics()     one row per Prometheus sample (metric, labels, stat, value).
   faiss_build(family := 'auto', <option> := ...)  build and publish an index version over
                       store/CURRENT; one (field, value) row per manifest entry.  Unset options
                       fall back to the faiss_* settings (udfs/faiss_index.py BuildOptions). */

CREATE OR REPLACE TEMP MACRO faiss_search(q, k := 10, k_factor := 1.0) AS TABLE
SELECT
    hit.rank AS rank,
    hit.chunk_id AS chunk_id,
    hit.score AS score
FROM (
    -- Checked here, before any cast or product can overflow (DuckDB would name neither the
    -- macro nor the argument); 2147483647 is the most an INTEGER k of faiss_topk holds.  k
    -- itself may exceed the store: faiss_topk returns every vector then.  k * k_factor is
    -- computed in DOUBLE, which cannot overflow.
    SELECT unnest(CASE
        WHEN k IS NULL OR k < 1
            THEN error('faiss_search: k must be at least 1, got ' || coalesce(k::VARCHAR, 'NULL'))
        WHEN k > 2147483647
            THEN error('faiss_search: k must be at most 2147483647, got ' || k::VARCHAR
                       || '; ask for fewer hits (k above the store size already returns every chunk)')
        WHEN k_factor IS NULL OR k_factor < 1
            THEN error('faiss_search: k_factor must be at least 1, got '
                       || coalesce(k_factor::VARCHAR, 'NULL'))
        WHEN k::DOUBLE * k_factor::DOUBLE > 2147483647
            THEN error('faiss_search: k * k_factor must be at most 2147483647 candidates, got '
                       || k::VARCHAR || ' * ' || k_factor::VARCHAR || '; lower k or k_factor')
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
            faiss_index_info().metric)
    END) AS hit
)
ORDER BY rank;

CREATE OR REPLACE TEMP MACRO faiss_index_info() AS TABLE
SELECT
    info.version AS version,
    info.family AS family,
    info.factory AS factory,
    info.ntotal AS ntotal,
    info.dimension AS dimension,
    info.metric AS metric,
    info.device AS device,
    info.parameters AS parameters,
    info.store_fingerprint AS store_fingerprint,
    -- UTC; TIMESTAMP rather than TIMESTAMPTZ, which Python clients can only fetch with pytz.
    CAST(info.built_at AS TIMESTAMP) AS built_at
FROM (SELECT faiss_index_info() AS info);

CREATE OR REPLACE TEMP MACRO faiss_metrics() AS TABLE
SELECT
    sample.metric AS metric,
    sample.labels AS labels,
    sample.stat AS stat,
    sample.value AS value
FROM (SELECT unnest(faiss_metrics()) AS sample);

CREATE OR REPLACE TEMP MACRO faiss_build(
    family := 'auto', nlist := NULL, pq_m := NULL, pq_nbits := NULL, opq := NULL, hnsw_m := NULL,
    ef_construction := NULL, metric := NULL, train_sample := NULL, nprobe := NULL, ef_search := NULL,
    refine_k_factor := NULL, sq_type := NULL, seed := NULL, memory_budget_bytes := NULL, use_gpu := NULL,
    build_threads := NULL, publish := true
) AS TABLE
SELECT
    CAST(entry.key AS VARCHAR) AS field,
    -- Strings unquoted, numbers and nested objects as JSON text.
    CAST(entry.value ->> '$' AS VARCHAR) AS value
-- faiss_build runs in a subquery, not as json_each's argument: table function arguments are
-- evaluated while binding, so every bind (EXPLAIN, a relation's schema) would build again.
FROM (
    SELECT faiss_build(
        family,
        CAST(to_json({
            'nlist': nlist, 'pq_m': pq_m, 'pq_nbits': pq_nbits, 'opq': opq, 'hnsw_m': hnsw_m,
            'ef_construction': ef_construction, 'metric': metric, 'train_sample': train_sample,
            'nprobe': nprobe, 'ef_search': ef_search, 'refine_k_factor': refine_k_factor,
            'sq_type': sq_type, 'seed': seed, 'memory_budget_bytes': memory_budget_bytes, 'use_gpu': use_gpu,
            'build_threads': build_threads, 'publish': publish
        }) AS VARCHAR)) AS manifest
) AS built,
json_each(built.manifest) AS entry
ORDER BY entry.id;
