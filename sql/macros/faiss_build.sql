/* faiss_build(family := 'auto', <option> := NULL, ..., publish := true) -> field VARCHAR,
   value VARCHAR: build a FAISS index version over store/CURRENT and (with publish) publish it;
   one (field, value) row per manifest entry, strings unquoted, numbers and nested objects as
   JSON text.
     family   'auto' (default: chosen by store size and memory budget) or one of 'flat', 'ivf_flat',
              'ivf_sq', 'ivf_pq', 'hnsw', 'ivf_pq_refine'
     options  nlist, pq_m, pq_nbits, opq, hnsw_m, ef_construction, metric, train_sample,
              kmeans_iterations, nprobe, ef_search, refine_k_factor, sq_type, seed,
              memory_budget_bytes, use_gpu, build_threads, incremental, max_drift: all default
              NULL, which falls back to the faiss_* settings, then to the settings' defaults
              (udfs/settings.py); the UDF checks their values
     publish  whether the new version becomes index/CURRENT (default true)
       SELECT * FROM faiss_build(family := 'ivf_flat', nlist := 64, nprobe := 8); */

CREATE OR REPLACE TEMP MACRO faiss_build(
    family := 'auto', nlist := NULL, pq_m := NULL, pq_nbits := NULL, opq := NULL, hnsw_m := NULL,
    ef_construction := NULL, metric := NULL, train_sample := NULL, kmeans_iterations := NULL,
    nprobe := NULL, ef_search := NULL, refine_k_factor := NULL, sq_type := NULL, seed := NULL,
    memory_budget_bytes := NULL, use_gpu := NULL, build_threads := NULL, incremental := NULL,
    max_drift := NULL, publish := true
) AS TABLE
SELECT
    CAST(entry.key AS VARCHAR) AS field,
    -- Strings unquoted, numbers and nested objects as JSON text.
    CAST(entry.value ->> '$' AS VARCHAR) AS value
-- faiss_build runs in a subquery, not as json_each's argument: table function arguments are
-- evaluated while binding, so every bind (EXPLAIN, a relation's schema) would build again.
FROM (
    SELECT faiss_build(
        family,
        CAST(to_json({
            'nlist': nlist, 'pq_m': pq_m, 'pq_nbits': pq_nbits, 'opq': opq, 'hnsw_m': hnsw_m,
            'ef_construction': ef_construction, 'metric': metric, 'train_sample': train_sample,
            'kmeans_iterations': kmeans_iterations,
            'nprobe': nprobe, 'ef_search': ef_search, 'refine_k_factor': refine_k_factor,
            'sq_type': sq_type, 'seed': seed, 'memory_budget_bytes': memory_budget_bytes, 'use_gpu': use_gpu,
            'build_threads': build_threads, 'incremental': incremental, 'max_drift': max_drift,
            'publish': publish
        }) AS VARCHAR)) AS manifest
) AS built,
json_each(built.manifest) AS entry
ORDER BY entry.id;
