/* Tune the published index (`python bootstrap.py autotune`): the faiss_autotune macro's grid.
   Variables: k, target_recall, queries (a table name or an absolute Parquet path; NULL for a
   held-out sample of the index's vectors). */
SELECT *
FROM faiss_autotune(
    k := getvariable('k'),
    target_recall := getvariable('target_recall'),
    queries := getvariable('queries'));
