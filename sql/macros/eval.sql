/* Retrieval channels for evaluation: table macros over a whole query table (default
   `queries`, made by sql/load_queries.sql), all returning (query_id, rank, chunk_id, score)
   with rank 1 the best and score higher-is-better, so a report can UNION them:

     channel_faiss(k := 10)                       vector search, faiss_topk on the published index
     channel_bm25(k := 10, k1 := 1.2, b := 0.75)  BM25 over the fts index of sql/build_bm25_index.sql
     channel_hybrid(k := 10, rrf_k := 60, faiss_weight := 1.0, bm25_weight := 1.0, depth := 100)
                                                  weighted reciprocal-rank fusion of the two

   Tables are named by string parameters (queries := 'queries', documents := 'bm25_documents')
   and read with query_table(): DuckDB binds a macro's tables when the macro is created, and
   these tables only exist once the scripts that make them have run. */

-- The SQL text that reads the file named by a script variable, by its extension; query()
-- runs it, so the path stays a bound variable and is never spliced into SQL.  `what` names
-- the script and parameter in the error.
CREATE OR REPLACE TEMP MACRO eval_reader_query(path_variable, what) AS
CASE
    WHEN regexp_matches(lower(getvariable(path_variable)::VARCHAR), '\.parquet$')
        THEN 'SELECT * FROM read_parquet(getvariable(''' || path_variable || '''))'
    WHEN regexp_matches(lower(getvariable(path_variable)::VARCHAR), '\.(csv|tsv)$')
        THEN 'SELECT * FROM read_csv(getvariable(''' || path_variable || '''), header = true)'
    WHEN regexp_matches(lower(getvariable(path_variable)::VARCHAR), '\.(jsonl|ndjson|json)$')
        THEN 'SELECT * FROM read_json(getvariable(''' || path_variable || '''))'
    ELSE error(what || ' must name a .parquet, .csv or .jsonl file, got '
               || coalesce(getvariable(path_variable)::VARCHAR, 'nothing'))
END;

CREATE OR REPLACE TEMP MACRO channel_faiss(k := 10, queries := 'queries') AS TABLE
WITH checked AS (
    SELECT CASE
        WHEN k IS NULL OR k < 1
            THEN error('channel_faiss: k must be at least 1, got ' || coalesce(k::VARCHAR, 'NULL')
                       || '; pass k := 10 for a top-10')
        ELSE k
    END::INTEGER AS k
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

-- Okapi BM25 for every query at once over the tables of the fts index (fts_main_<documents>),
-- with the formula of the fts extension's match_bm25 (same idf, k1, b, and log base 10), so
-- scores equal match_bm25's; match_bm25 itself scores one query string per call.
CREATE OR REPLACE TEMP MACRO channel_bm25(
    k := 10, k1 := 1.2, b := 0.75, queries := 'queries', documents := 'bm25_documents'
) AS TABLE
WITH checked AS (
    SELECT
        CASE
            WHEN k IS NULL OR k < 1
                THEN error('channel_bm25: k must be at least 1, got ' || coalesce(k::VARCHAR, 'NULL')
                           || '; pass k := 10 for a top-10')
            ELSE k
        END::INTEGER AS k,
        CASE
            WHEN k1 IS NULL OR k1 < 0
                THEN error('channel_bm25: k1 must be at least 0, got ' || coalesce(k1::VARCHAR, 'NULL')
                           || '; 1.2 is the usual value')
            ELSE k1
        END::DOUBLE AS k1,
        CASE
            WHEN b IS NULL OR b < 0 OR b > 1
                THEN error('channel_bm25: b must be between 0 and 1, got ' || coalesce(b::VARCHAR, 'NULL')
                           || '; 0.75 is the usual value')
            ELSE b
        END::DOUBLE AS b
),
stats AS (
    SELECT s.num_docs::DOUBLE AS num_docs, s.avgdl::DOUBLE AS avgdl
    FROM query_table('fts_main_' || documents || '.stats') AS s
),
query_terms AS (
    -- code_terms splits queries as sql/build_bm25_index.sql split the documents; each
    -- distinct term counts once per query, as in match_bm25.
    SELECT DISTINCT t.query_id AS query_id, unnest(string_split(t.terms, ' ')) AS term
    FROM (SELECT q.query_id::VARCHAR AS query_id, code_terms(q.text) AS terms FROM query_table(queries) AS q) AS t
),
matched_terms AS (
    SELECT qt.query_id AS query_id, d.termid AS termid, d.df::DOUBLE AS df
    FROM query_terms AS qt
    JOIN query_table('fts_main_' || documents || '.dict') AS d ON d.term = qt.term
),
postings AS (
    SELECT p.termid AS termid, p.docid AS docid, count(*)::DOUBLE AS tf
    FROM query_table('fts_main_' || documents || '.terms') AS p
    WHERE p.termid IN (SELECT m.termid FROM matched_terms AS m)
    GROUP BY p.termid, p.docid
),
scored AS (
    SELECT
        m.query_id AS query_id,
        d.name::BIGINT AS chunk_id,
        -- Rounded to 1e-9: DuckDB sums a query's terms in whatever order its threads meet them,
        -- and equal documents must tie exactly, so that the chunk id breaks the tie every time.
        round(sum(
            log(((s.num_docs - m.df + 0.5) / (m.df + 0.5)) + 1)
            * ((p.tf * (c.k1 + 1)) / (p.tf + c.k1 * (1 - c.b + c.b * (d.len / s.avgdl))))
        ), 9)::DOUBLE AS score
    FROM matched_terms AS m
    JOIN postings AS p ON p.termid = m.termid
    JOIN query_table('fts_main_' || documents || '.docs') AS d ON d.docid = p.docid
    CROSS JOIN stats AS s
    CROSS JOIN checked AS c
    GROUP BY m.query_id, d.name
)
SELECT
    r.query_id AS query_id,
    row_number() OVER (PARTITION BY r.query_id ORDER BY r.score DESC, r.chunk_id)::INTEGER AS rank,
    r.chunk_id AS chunk_id,
    r.score AS score
FROM scored AS r
CROSS JOIN checked AS c
QUALIFY rank <= c.k;

-- Reciprocal-rank fusion (Cormack et al., 2009): score = sum over channels of
-- weight / (rrf_k + rank), over each channel's top `depth`; a chunk a channel did not return
-- adds nothing from it, and a channel of weight 0 is left out.  The weights are parameters
-- because they must be measured: equal weights with MiniLM have scored below BM25 alone on code.
CREATE OR REPLACE TEMP MACRO channel_hybrid(
    k := 10, rrf_k := 60, faiss_weight := 1.0, bm25_weight := 1.0, depth := 100,
    queries := 'queries', documents := 'bm25_documents'
) AS TABLE
WITH checked AS (
    SELECT
        CASE
            WHEN k IS NULL OR k < 1
                THEN error('channel_hybrid: k must be at least 1, got ' || coalesce(k::VARCHAR, 'NULL')
                           || '; pass k := 10 for a top-10')
            ELSE k
        END::INTEGER AS k,
        CASE
            WHEN rrf_k IS NULL OR rrf_k < 0
                THEN error('channel_hybrid: rrf_k must be at least 0, got ' || coalesce(rrf_k::VARCHAR, 'NULL')
                           || '; 60 is the usual value')
            ELSE rrf_k
        END::DOUBLE AS rrf_k,
        CASE
            WHEN faiss_weight IS NULL OR faiss_weight < 0
                THEN error('channel_hybrid: faiss_weight must be at least 0, got '
                           || coalesce(faiss_weight::VARCHAR, 'NULL'))
            WHEN bm25_weight IS NULL OR bm25_weight < 0
                THEN error('channel_hybrid: bm25_weight must be at least 0, got '
                           || coalesce(bm25_weight::VARCHAR, 'NULL'))
            WHEN faiss_weight + bm25_weight = 0
                THEN error('channel_hybrid: faiss_weight and bm25_weight are both 0; give one of them a '
                           || 'positive weight')
            ELSE faiss_weight
        END::DOUBLE AS faiss_weight,
        bm25_weight::DOUBLE AS bm25_weight,
        CASE
            WHEN depth IS NULL OR depth < k
                THEN error('channel_hybrid: depth (candidates fused per channel) must be at least k = '
                           || k::VARCHAR || ', got ' || coalesce(depth::VARCHAR, 'NULL'))
            ELSE depth
        END::INTEGER AS depth
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
