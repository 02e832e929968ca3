/* v_runs: the run registry as stock clients read it, from runs/<run_id>.parquet (one file per run,
   the same rows as the runs table of catalog.duckdb): when, which channel, on which index
   and store versions, with which FAISS tuning and parameters (k, weights, ...). */
CREATE OR REPLACE VIEW v_runs AS
SELECT
    r.run_id::VARCHAR AS run_id,
    r.created_at::TIMESTAMP AS created_at,
    r.channel::VARCHAR AS channel,
    r.index_version::VARCHAR AS index_version,
    r.tuning_profile::VARCHAR AS tuning_profile,
    r.parameters::JSON AS parameters,
    (r.parameters::JSON ->> 'k')::INTEGER AS k
FROM read_parquet('runs/*.parquet', union_by_name = true) AS r;
