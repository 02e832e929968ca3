/* Build a FAISS index over store/CURRENT, publish it, and return its manifest as
   (field, value) rows.  Every parameter is an optional DuckDB variable; unset ones fall back
   to the connection's faiss_* settings (defaults: udfs/settings.py; see udfs/faiss_build.py):
     family            'auto' (default) | 'flat' | 'ivf_flat' | 'ivf_sq' | 'ivf_pq' | 'hnsw' | 'ivf_pq_refine'
     metric            'ip' (default; the store's vectors are unit length) | 'cos' | 'l2'
     nlist, nprobe, pq_m, pq_nbits, opq, train_sample, seed      IVF and PQ families
     kmeans_iterations                                          IVF families (default 5)
     hnsw_m, ef_construction, ef_search                         hnsw
     refine_k_factor                                            ivf_pq_refine
     sq_type           'fp16' (default) | '8': codes of ivf_sq
     memory_budget_bytes, use_gpu                               what 'auto' chooses by
     publish           true (default) | false: build the version without flipping CURRENT
     build_threads     OpenMP threads for training and adding (default: 1 per 50k vectors, up to all cores)
     incremental       true (default) | false: update the CURRENT index (remove_ids / add_with_ids into a
                       new version, manifest fields parent, incremental, incremental_reason, drift) when
                       its family allows (the ivf_* families) and nothing structural changed; false: full build
     max_drift         full rebuild once ids added + removed since the last full build pass this
                       fraction of its vectors (default 0.2)
   python bootstrap.py sql sql/build_index.sql --catalog DIR --param family=ivf_flat --param nlist=256 */
SELECT field, value
FROM faiss_build(
    family := coalesce(getvariable('family'), 'auto'),
    nlist := getvariable('nlist'),
    pq_m := getvariable('pq_m'),
    pq_nbits := getvariable('pq_nbits'),
    opq := getvariable('opq'),
    hnsw_m := getvariable('hnsw_m'),
    ef_construction := getvariable('ef_construction'),
    metric := getvariable('metric'),
    train_sample := getvariable('train_sample'),
    kmeans_iterations := getvariable('kmeans_iterations'),
    nprobe := getvariable('nprobe'),
    ef_search := getvariable('ef_search'),
    refine_k_factor := getvariable('refine_k_factor'),
    sq_type := getvariable('sq_type'),
    seed := getvariable('seed'),
    memory_budget_bytes := getvariable('memory_budget_bytes'),
    use_gpu := getvariable('use_gpu'),
    build_threads := getvariable('build_threads'),
    incremental := getvariable('incremental'),
    max_drift := getvariable('max_drift'),
    publish := coalesce(getvariable('publish'), true)
);
