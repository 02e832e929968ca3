/* channel_hybrid(k := 10, rrf_k := 60, faiss_weight := 1.0, bm25_weight := 1.0, depth := 100,
   queries := 'queries', documents := 'bm25_documents') -> query_id VARCHAR, rank INTEGER,
   chunk_id BIGINT, score DOUBLE: the hybrid retrieval channel for evaluation, weighted
   reciprocal-rank fusion (Cormack et al., 2009) of channel_faiss and channel_bm25: score = sum
   over channels of weight / (rrf_k + rank), over each channel's top depth; a chunk a channel did
   not return adds nothing from it, and a channel of weight 0 is left out.  The weights are
   parameters because they must be measured: equal weights with MiniLM have scored below BM25
   alone on code (sql/tune_fusion.sql measures them).
     k             hits per query, at least 1 (default 10)
     rrf_k         the fusion's rank offset, at least 0 (default 60)
     faiss_weight  weight of channel_faiss, at least 0 (default 1.0)
     bm25_weight   weight of channel_bm25, at least 0 (default 1.0); not both 0
     depth         candidates fused per channel, at least k (default 100)
     queries, documents  as for channel_bm25 (defaults 'queries', 'bm25_documents') */

CREATE OR REPLACE TEMP MACRO channel_hybrid(
    k := 10, rrf_k := 60, faiss_weight := 1.0, bm25_weight := 1.0, depth := 100,
    queries := 'queries', documents := 'bm25_documents'
) AS TABLE
WITH arguments AS (
    SELECT
        check_argument(k, 'channel_hybrid: k', k >= 1, 'be at least 1', '; pass k := 10 for a top-10')::INTEGER AS k,
        check_argument(rrf_k, 'channel_hybrid: rrf_k', rrf_k >= 0, 'be at least 0', '; 60 is the usual value')::DOUBLE
            AS rrf_k,
        check_argument(faiss_weight, 'channel_hybrid: faiss_weight', faiss_weight >= 0, 'be at least 0', '')::DOUBLE
            AS faiss_weight,
        check_argument(bm25_weight, 'channel_hybrid: bm25_weight', bm25_weight >= 0, 'be at least 0', '')::DOUBLE
            AS bm25_weight
),
-- The checks that compare two arguments read the checked ones, so a bad k is named as such.
checked AS (
    SELECT
        a.k AS k,
        a.rrf_k AS rrf_k,
        CASE
            WHEN a.faiss_weight + a.bm25_weight = 0
                THEN error('channel_hybrid: faiss_weight and bm25_weight are both 0; give one of them a '
                           || 'positive weight')
            ELSE a.faiss_weight
        END::DOUBLE AS faiss_weight,
        a.bm25_weight AS bm25_weight,
        check_argument(depth, 'channel_hybrid: depth (candidates fused per channel)', depth >= a.k,
                       'be at least k = ' || a.k::VARCHAR, '')::INTEGER AS depth
    FROM arguments AS a
),
candidates AS (
    SELECT f.query_id AS query_id, f.chunk_id AS chunk_id, f.rank AS rank, c.faiss_weight AS weight
    FROM channel_faiss(k := depth, queries := queries) AS f
    CROSS JOIN checked AS c
    WHERE c.faiss_weight > 0
    UNION ALL
    SELECT b.query_id AS query_id, b.chunk_id AS chunk_id, b.rank AS rank, c.bm25_weight AS weight
    FROM channel_bm25(k := depth, queries := queries, documents := documents) AS b
    CROSS JOIN checked AS c
    WHERE c.bm25_weight > 0
),
fused AS (
    SELECT h.query_id AS query_id, h.chunk_id AS chunk_id, sum(h.weight / (c.rrf_k + h.rank))::DOUBLE AS score
    FROM candidates AS h
    CROSS JOIN checked AS c
    WHERE h.rank <= c.depth
    GROUP BY h.query_id, h.chunk_id
)
SELECT
    u.query_id AS query_id,
    row_number() OVER (PARTITION BY u.query_id ORDER BY u.score DESC, u.chunk_id)::INTEGER AS rank,
    u.chunk_id AS chunk_id,
    u.score AS score
FROM fused AS u
CROSS JOIN checked AS c
QUALIFY rank <= c.k;
