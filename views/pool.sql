/* pool: every run's top-k rows, one Parquet file per run under pools/ (written by
   sql/write_pool.sql): the query, the channel, the chunk's rank and score, and why it came
   back: its symbols, AST node kinds and concrete tokens that share a term with the query. */
CREATE OR REPLACE VIEW pool AS
SELECT
    p.run_id::VARCHAR AS run_id,
    p.query_id::VARCHAR AS query_id,
    p.channel::VARCHAR AS channel,
    p.rank::INTEGER AS rank,
    p.chunk_id::BIGINT AS chunk_id,
    p.score::DOUBLE AS score,
    p.explain_symbols::VARCHAR[] AS explain_symbols,
    p.explain_ast_kinds::VARCHAR[] AS explain_ast_kinds,
    p.explain_cst_hits::VARCHAR[] AS explain_cst_hits
FROM read_parquet('pools/*.parquet', union_by_name = true) AS p;
