/* faiss_index_info() -> version, family, factory, ntotal, dimension, metric, device, parameters,
   store_fingerprint, built_at TIMESTAMP (UTC): one row, the published FAISS index as this
   connection loaded it, from the faiss_index_info UDF of udfs/faiss_search.py.  No arguments. */

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
