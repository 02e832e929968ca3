/* faiss_search(q, k := 10, k_factor := 1.0) -> rank INTEGER, chunk_id BIGINT, score FLOAT,
       uri VARCHAR, start_byte BIGINT, end_byte BIGINT, start_line INTEGER, end_line INTEGER:
   the k nearest chunks to ONE query vector q (FLOAT[] or FLOAT[n], e.g. embed(...)) on the
   published FAISS index, best first, over faiss_search_hits (udfs/faiss_search.py).  score is a
   similarity, higher is better (for an 'l2' index, the negated squared distance).  uri, bytes
   and lines say where the chunk is in the current store, the values of the chunks view and of
   chunk_locations, so a search needs no join for them (at 200k chunks 0.9-1.4 ms a statement, where
   the same search joined to chunk_locations took 1.5-2.4 ms and to chunks 3.6-4.7: BENCHMARKS.md); they
   are NULL for a hit the store no longer holds (an index older than the store: see
   v_faiss_orphan_ids), as a LEFT JOIN to chunks would give.  Join chunks for content, language,
   kind or symbols.
     q         the query vector; an empty q, or a zero q on an 'ip' or 'cos' index (faiss_topk's
               error), is an error
     k         hits, at least 1 (default 10); k above the store size returns every chunk, for
               every family; k and k * k_factor at most 2147483647
     k_factor  at least 1 (default 1.0); above 1 the index fetches ceil(k * k_factor)
               candidates and exact_rerank keeps the exact top k of them, scored with the
               index's metric from the stored vectors; worth it for ivf_pq, where PQ distances
               are approximate
       SELECT rank, uri, start_line, end_line, score
       FROM faiss_search(embed('parse a config file'), k := 10);
   One query per call of faiss_search_hits, a native UDF: a one-query statement (what an
   analyst, a dashboard tile or a report loop sends) skips DuckDB's arrow call path, which
   costs more than the search there (bench/bench_latency.py).  LATERAL works for a batch of
   queries, one search per distinct query vector (DuckDB's worker threads run them side by side):
       SELECT q.id, r.* FROM queries AS q, LATERAL faiss_search(q.embedding, k := 10) AS r;
   the batched form calls the arrow UDFs in the select list and unnests there, one
   index.search per chunk (up to 2048) of rows: 2.7-6.7x the LATERAL form's throughput at
   1M and 200k vectors (BENCHMARKS.md, issue 15):
       SELECT q.id, unnest(faiss_topk(q.embedding, 10), recursive := true)
       FROM queries AS q;
       SELECT q.id, unnest(exact_rerank(q.embedding,
                                        [h.chunk_id FOR h IN faiss_topk(q.embedding, 40)],
                                        10, 'ip'), recursive := true)
       FROM queries AS q;
   In a PREPAREd statement pass the query as a parameter, faiss_search(embed($1)): DuckDB folds a
   constant query's search at PREPARE and keeps that answer across publishes (udfs/faiss_search.py).
   TEMP, like every macro here, so catalog.duckdb stays openable by a stock DuckDB client. */

CREATE OR REPLACE TEMP MACRO faiss_search(q, k := 10, k_factor := 1.0) AS TABLE
-- No ORDER BY: the hits come best first, and unnest keeps a list's order (DuckDB preserves
-- insertion order, preserve_insertion_order = true by default).  Sorting ten rows cost 0.25 ms
-- of a 1.4 ms one-query statement (bench/bench_latency.py).
-- The list unnested as a table function, then each hit's struct into its columns (named by
-- faiss_search_hits' STRUCT, udfs/faiss_search.py LOCATED_HITS_TYPE): 0.06-0.1 ms less than
-- unnest in a subquery's select list and a projection of each field by name.
--
-- One UDF call does the argument checks (k, k_factor, k * k_factor, an empty q: in DOUBLE,
-- before any INTEGER cast or product can overflow, naming this macro and the argument),
-- faiss_topk, and with k_factor above 1 exact_rerank.  The checks used to be CASE arms of
-- check_argument here: binding them, and q substituted five times (a subquery q planned
-- five times), cost 2-3 ms of a 4.5 ms one-query statement, far more than the search
-- (bench/bench_latency.py).  A zero q on an 'ip' or 'cos' index is faiss_topk's error.
SELECT unnest(hit)
FROM unnest(faiss_search_hits(q, k, k_factor)) AS hits(hit);
