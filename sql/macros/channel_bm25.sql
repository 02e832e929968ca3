/* channel_bm25(k := 10, k1 := 1.2, b := 0.75, queries := 'queries', documents := 'bm25_documents')
   -> query_id VARCHAR, rank INTEGER, chunk_id BIGINT, score DOUBLE: the BM25 retrieval channel
   for evaluation.  Okapi BM25 for every query at once over the tables of the fts index
   (fts_main_<documents>, made by sql/build_bm25_index.sql), with the formula of the fts
   extension's match_bm25 (same idf, k1, b, and log base 10), so scores equal match_bm25's;
   match_bm25 itself scores one query string per call.  Rank 1 is the best, ties broken by chunk
   id, as channel_faiss and channel_hybrid return them.
     k          hits per query, at least 1 (default 10)
     k1         term-frequency saturation, at least 0 (default 1.2)
     b          length normalisation, between 0 and 1 (default 0.75)
     queries    name of the query table, with query_id and text (default 'queries')
     documents  name of the indexed document table (default 'bm25_documents')
   Tables are named by string parameters and read with query_table(): DuckDB binds a macro's
   tables when the macro is created, and these only exist once the scripts that make them ran. */

CREATE OR REPLACE TEMP MACRO channel_bm25(
    k := 10, k1 := 1.2, b := 0.75, queries := 'queries', documents := 'bm25_documents'
) AS TABLE
WITH checked AS (
    SELECT
        check_argument(k, 'channel_bm25: k', k >= 1, 'be at least 1', '; pass k := 10 for a top-10')::INTEGER AS k,
        check_argument(k1, 'channel_bm25: k1', k1 >= 0, 'be at least 0', '; 1.2 is the usual value')::DOUBLE AS k1,
        check_argument(b, 'channel_bm25: b', b BETWEEN 0 AND 1, 'be between 0 and 1', '; 0.75 is the usual value')::DOUBLE AS b
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
