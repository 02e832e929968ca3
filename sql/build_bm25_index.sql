/* Build the BM25 index that channel_bm25 and channel_hybrid search: a persisted table
   bm25_documents(chunk_id, terms) over the current chunks, its fts index (schema
   fts_main_bm25_documents), and bm25_index_info, the store it was built from.  Rerun it after
   each ingest.  Parameter symbol_repeats (default 6): how many times a chunk's defined names
   (its symbols) are added to its document, measured by bench/bench_bm25_names.py on packages
   the evaluation does not use:
     python bootstrap.py bm25 --catalog DIR
   (not `bootstrap.py sql`: PRAGMA create_fts_index is expanded when DuckDB parses it, so this
   script runs one statement at a time, see bootstrap.build_bm25_index).

   A document is the chunk's path and content through code_terms, which keeps identifiers
   whole and adds their parts (parse_v2 -> parse_v2 parse v2 v 2; HTTPServer -> httpserver
   http server), so the fts tokenizer only has to split on spaces: its ignore pattern keeps
   [a-z0-9_], and stemming and stop words are off because identifiers are not English.
   A chunk's names are what questions about code most often ask for, yet its text holds each
   once among hundreds of terms: repeating them raises their term frequency (BM25 saturates it). */

SET VARIABLE bm25_symbol_repeats = coalesce(getvariable('symbol_repeats'), 6);
RESET VARIABLE symbol_repeats;

SELECT CASE WHEN NOT (getvariable('bm25_symbol_repeats') BETWEEN 0 AND 1000)
    THEN error('build_bm25_index.sql: symbol_repeats must be between 0 and 1000, got '
               || getvariable('bm25_symbol_repeats')::VARCHAR || '; 6 is the measured default')
END AS checked;

CREATE OR REPLACE TABLE bm25_documents AS
SELECT
    c.id::BIGINT AS chunk_id,
    -- The path names the module, which queries often do ("http client ...").
    code_terms(
        c.uri || chr(10) || c.content
        || repeat(chr(10) || array_to_string(coalesce(c.symbols, []), ' '), getvariable('bm25_symbol_repeats')::INTEGER)
    )::VARCHAR AS terms
FROM chunks AS c
ORDER BY c.id;

PRAGMA create_fts_index(
    'bm25_documents', 'chunk_id', 'terms',
    stemmer = 'none', stopwords = 'none', ignore = '[^a-z0-9_]+', strip_accents = 0, lower = 1,
    overwrite = 1
);

CREATE OR REPLACE TABLE bm25_index_info AS
SELECT
    v.store_version::VARCHAR AS store_version,
    v.store_fingerprint::VARCHAR AS store_fingerprint,
    (SELECT count(*) FROM bm25_documents)::BIGINT AS documents,
    (SELECT count(*) FROM fts_main_bm25_documents.dict)::BIGINT AS distinct_terms,
    (now() AT TIME ZONE 'UTC')::TIMESTAMP AS built_at_utc
FROM (SELECT unnest(eval_catalog_versions())) AS v;

SELECT * FROM bm25_index_info;
