/* Run one retrieval channel over the whole queries table, register the run, and write its
   pool: the top-k rows of every query with why each chunk came back.

   Parameters:
     channel        'faiss' | 'bm25' | 'hybrid' (required)
     k              rows per query (default 10)
     rrf_k, faiss_weight, bm25_weight, depth   hybrid only (see
                    sql/macros/channel_hybrid.sql); what is not passed comes from fusion_profile(): the
                    published index version's fusion.json (written by sql/tune_fusion.sql), else
                    channel_hybrid's defaults 60, 1.0, 1.0, 100.  The two weights go together:
                    passing either one fuses with the passed weight(s), the other 1.0, never
                    half a profile.  parameters.weights_source records where the weights came
                    from: 'fusion.json', 'default' or 'explicit'
     k1, b          bm25 only (defaults 1.2, 0.75)
     run_id         optional; default: UTC timestamp and a random suffix.  Letters, digits,
                    '-', '_' and '.', starting with a letter or digit, at most 100
     python bootstrap.py sql sql/write_pool.sql --catalog DIR --param channel=hybrid --param bm25_weight=2

   Writes pools/<run_id>.parquet (zstd) with run_id, query_id, channel, rank, chunk_id, score,
   explain_symbols, explain_ast_kinds, explain_cst_hits, and runs/<run_id>.parquet, the run's
   row of the runs table (run_id, created_at, channel, index_version, tuning_profile,
   parameters), which is also inserted into the runs table of catalog.duckdb.  Neither file
   may exist already: runs never overwrite each other.  Views pool and v_runs read the files
   (a connection opened before the first pool sees them after reconnecting). */

SET VARIABLE pool_channel = getvariable('channel')::VARCHAR;
SET VARIABLE pool_k = coalesce(getvariable('k'), 10);
-- Read for hybrid runs only: a bad fusion.json must not stop a faiss or bm25 run.
SET VARIABLE pool_fusion = CASE WHEN getvariable('pool_channel') = 'hybrid' THEN fusion_profile() END;
-- A profile's weights were measured as a pair: one weight passed replaces both.
SET VARIABLE pool_weights_source = CASE
    WHEN getvariable('faiss_weight') IS NOT NULL OR getvariable('bm25_weight') IS NOT NULL THEN 'explicit'
    ELSE coalesce(getvariable('pool_fusion').source, 'default')
END;
SET VARIABLE pool_rrf_k = coalesce(getvariable('rrf_k'), getvariable('pool_fusion').rrf_k, 60);
SET VARIABLE pool_faiss_weight = CASE
    WHEN getvariable('pool_weights_source') = 'explicit' THEN coalesce(getvariable('faiss_weight'), 1.0)
    ELSE coalesce(getvariable('pool_fusion').faiss_weight, 1.0)
END;
SET VARIABLE pool_bm25_weight = CASE
    WHEN getvariable('pool_weights_source') = 'explicit' THEN coalesce(getvariable('bm25_weight'), 1.0)
    ELSE coalesce(getvariable('pool_fusion').bm25_weight, 1.0)
END;
SET VARIABLE pool_depth = coalesce(getvariable('depth'), getvariable('pool_fusion').depth, 100);
SET VARIABLE pool_k1 = coalesce(getvariable('k1'), 1.2);
SET VARIABLE pool_b = coalesce(getvariable('b'), 0.75);
SET VARIABLE pool_run_id = coalesce(
    getvariable('run_id'),
    strftime(now() AT TIME ZONE 'UTC', '%Y%m%dT%H%M%SZ') || '-' || left(replace(uuid()::VARCHAR, '-', ''), 8)
);
-- The run_id names pools/<run_id>.parquet and runs/<run_id>.parquet, which the pool and v_runs
-- views glob one level deep: a '/' would write the run where they never look, so path
-- characters are refused before anything runs.
SELECT CASE WHEN NOT coalesce(regexp_full_match(getvariable('pool_run_id'), '[A-Za-z0-9][A-Za-z0-9._-]{0,99}'), false)
    THEN error('write_pool.sql: run_id must be 1 to 100 letters, digits, ''-'', ''_'' or ''.'', starting with '
               || 'a letter or digit; got ' || coalesce('''' || getvariable('pool_run_id') || '''', 'NULL')
               || '. Pass another --param run_id, or none for a generated one')
END AS guard_run_id;
-- DuckDB variables last as long as the connection: the parameters are reset once read, so
-- a later run that leaves one out gets its default, not this run's value.
RESET VARIABLE channel;
RESET VARIABLE k;
RESET VARIABLE rrf_k;
RESET VARIABLE faiss_weight;
RESET VARIABLE bm25_weight;
RESET VARIABLE depth;
RESET VARIABLE k1;
RESET VARIABLE b;
RESET VARIABLE run_id;

-- The channel's SQL text, chosen here and run by query(): a statement naming all three
-- channels would need the FAISS and the BM25 index both, whichever channel runs.
SET VARIABLE pool_channel_query = CASE getvariable('pool_channel')
    WHEN 'faiss' THEN 'SELECT * FROM channel_faiss(k := getvariable(''pool_k''))'
    WHEN 'bm25' THEN 'SELECT * FROM channel_bm25(k := getvariable(''pool_k''), k1 := getvariable(''pool_k1''), '
                     || 'b := getvariable(''pool_b''))'
    WHEN 'hybrid' THEN 'SELECT * FROM channel_hybrid(k := getvariable(''pool_k''), '
                       || 'rrf_k := getvariable(''pool_rrf_k''), faiss_weight := getvariable(''pool_faiss_weight''), '
                       || 'bm25_weight := getvariable(''pool_bm25_weight''), depth := getvariable(''pool_depth''))'
    ELSE error('write_pool.sql: channel must be ''faiss'', ''bm25'' or ''hybrid'', got '
               || coalesce('''' || getvariable('pool_channel') || '''', 'nothing')
               || '; pass --param channel=bm25, say')
END;

SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = 'queries' AND schema_name = 'main')
        THEN error('write_pool.sql: no queries table; load a query set with sql/load_queries.sql first')
    WHEN getvariable('pool_channel') <> 'faiss'
         AND NOT EXISTS (SELECT 1 FROM duckdb_tables() WHERE table_name = 'bm25_index_info')
        THEN error('write_pool.sql: channel ' || getvariable('pool_channel') || ' needs the BM25 index; '
                   || 'build it with `python bootstrap.py bm25 --catalog DIR`')
END AS checked;

-- What the run was made from: the FAISS version and tuning, the store the BM25 index was
-- built from.  bm25_index_info is read through query() for the same reason as the channel.
SET VARIABLE pool_versions = eval_catalog_versions();
SET VARIABLE pool_bm25_store = (
    SELECT v.store_version FROM query(CASE
        WHEN getvariable('pool_channel') = 'faiss' THEN 'SELECT NULL::VARCHAR AS store_version'
        ELSE 'SELECT store_version FROM bm25_index_info'
    END) AS v
);

-- Checked before the search: a run_id whose files exist fails fast.
SET VARIABLE pool_path = catalog_output_path('pools/' || getvariable('pool_run_id') || '.parquet', false);
SET VARIABLE pool_run_path = catalog_output_path('runs/' || getvariable('pool_run_id') || '.parquet', false);

CREATE OR REPLACE TEMP TABLE pool_hits AS SELECT * FROM query(getvariable('pool_channel_query'));


-- AST kinds depend on the chunk only: parsed once per distinct chunk of the pool.
CREATE OR REPLACE TEMP TABLE pool_rows AS
WITH chunk_kinds AS (
    SELECT c.id AS chunk_id, explain_ast_kinds(c.content, c.language) AS ast_kinds
    FROM chunks AS c
    WHERE c.id IN (SELECT h.chunk_id FROM pool_hits AS h)
)
SELECT
    getvariable('pool_run_id')::VARCHAR AS run_id,
    h.query_id::VARCHAR AS query_id,
    getvariable('pool_channel')::VARCHAR AS channel,
    h.rank::INTEGER AS rank,
    h.chunk_id::BIGINT AS chunk_id,
    h.score::DOUBLE AS score,
    explain_symbols(c.symbols, q.text)::VARCHAR[] AS explain_symbols,
    k.ast_kinds::VARCHAR[] AS explain_ast_kinds,
    explain_cst_hits(c.content, c.language, q.text)::VARCHAR[] AS explain_cst_hits
FROM pool_hits AS h
JOIN queries AS q ON q.query_id = h.query_id
LEFT JOIN chunks AS c ON c.id = h.chunk_id
LEFT JOIN chunk_kinds AS k ON k.chunk_id = h.chunk_id
ORDER BY h.query_id, h.rank;

CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,
    channel VARCHAR NOT NULL,
    index_version VARCHAR,
    tuning_profile VARCHAR,
    parameters JSON
);

CREATE OR REPLACE TEMP TABLE pool_run AS
SELECT
    getvariable('pool_run_id')::VARCHAR AS run_id,
    (now() AT TIME ZONE 'UTC')::TIMESTAMP AS created_at,
    getvariable('pool_channel')::VARCHAR AS channel,
    CASE getvariable('pool_channel')
        WHEN 'faiss' THEN 'faiss:' || getvariable('pool_versions').faiss_version
        WHEN 'bm25' THEN 'bm25:' || getvariable('pool_bm25_store')
        ELSE 'faiss:' || getvariable('pool_versions').faiss_version || '+bm25:' || getvariable('pool_bm25_store')
    END::VARCHAR AS index_version,
    CASE WHEN getvariable('pool_channel') <> 'bm25' THEN getvariable('pool_versions').faiss_tuning END::VARCHAR
        AS tuning_profile,
    -- What every run records, merged with what its channel takes.
    json_merge_patch(
        json_object(
            'k', getvariable('pool_k'),
            'queries', (SELECT count(*) FROM queries),
            'store_version', getvariable('pool_versions').store_version
        ),
        CASE getvariable('pool_channel')
            WHEN 'bm25' THEN json_object('k1', getvariable('pool_k1'), 'b', getvariable('pool_b'))
            WHEN 'hybrid' THEN json_object(
                'rrf_k', getvariable('pool_rrf_k'), 'faiss_weight', getvariable('pool_faiss_weight'),
                'bm25_weight', getvariable('pool_bm25_weight'), 'depth', getvariable('pool_depth'),
                'weights_source', getvariable('pool_weights_source'))
            ELSE json_object()
        END
    )::JSON AS parameters;

-- The files first: they are what the views read; the runs table row follows them.
COPY pool_rows TO (getvariable('pool_path')) (FORMAT parquet, COMPRESSION zstd);
COPY pool_run TO (getvariable('pool_run_path')) (FORMAT parquet, COMPRESSION zstd);
INSERT INTO runs SELECT * FROM pool_run;

SELECT
    r.run_id AS run_id,
    r.channel AS channel,
    r.index_version AS index_version,
    (SELECT count(DISTINCT p.query_id) FROM pool_rows AS p)::BIGINT AS queries_with_results,
    (SELECT count(*) FROM pool_rows)::BIGINT AS pool_rows,
    getvariable('pool_path') AS pool_file
FROM pool_run AS r;
