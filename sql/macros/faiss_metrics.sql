/* faiss_metrics() -> metric, labels, stat, value: one row per Prometheus sample of the FAISS
   UDFs (searches, latencies, fallbacks), from the faiss_metrics UDF of udfs/metrics.py.  No
   arguments. */

CREATE OR REPLACE TEMP MACRO faiss_metrics() AS TABLE
SELECT
    sample.metric AS metric,
    sample.labels AS labels,
    sample.stat AS stat,
    sample.value AS value
FROM (SELECT unnest(faiss_metrics()) AS sample);
