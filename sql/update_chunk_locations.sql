/* chunk_locations: where each chunk of the current store is (id, uri, bytes, lines), in a DuckDB
   table keyed by id, so a one-query statement joins its hits by an index lookup (about 1 ms)
   instead of opening the store's Parquet parts (2.5-8 ms; bench/bench_latency.py).
   chunk_locations_store names the store version its rows are of.

   Brings the table from the store version it holds to the current one, reading only what
   changed (codeintel/chunk_locations.py decides what that is): a store version's chunks are its
   parts' rows but the ids in its deleted-ids file (udfs/store_schema.py), and an incremental
   ingest shares its parent's parts, adds one and hides more ids.  So the ids hidden since are
   deleted and the added parts' live rows inserted.  After sql/reset_chunk_locations.sql the
   table is filled the same way from every part, with nothing hidden before.
   Parameters: location_columns (udfs/store_schema.py's LOCATION_COLUMNS, the table's columns),
   parts (the Parquet parts to insert from), deleted_ids (the current version's
   deleted-ids file), deleted_ids_before (the held version's; the same file after a reset),
   store_version, store_fingerprint.  Returns the rows deleted and inserted. */

CREATE OR REPLACE TEMP TABLE chunk_locations_hidden AS
SELECT id FROM read_parquet(getvariable('deleted_ids'))
EXCEPT
SELECT id FROM read_parquet(getvariable('deleted_ids_before'));

CREATE OR REPLACE TEMP TABLE chunk_locations_change AS
SELECT
    (SELECT count(*) FROM chunk_locations) AS rows_before,
    (SELECT count(*) FROM chunk_locations WHERE id IN (SELECT id FROM chunk_locations_hidden)) AS deleted;

DELETE FROM chunk_locations WHERE id IN (SELECT id FROM chunk_locations_hidden);

INSERT INTO chunk_locations BY NAME
SELECT COLUMNS(c -> list_contains(getvariable('location_columns'), c))
FROM read_parquet(getvariable('parts')) AS p
ANTI JOIN read_parquet(getvariable('deleted_ids')) AS d ON d.id = p.id;

-- The key, after a reset (where it exists, nothing happens): an ART index, which the hits' join
-- probes with the ids DuckDB pushes into the scan at run time (EXPLAIN ANALYZE says Index Scan,
-- EXPLAIN Sequential Scan): 0.8 ms for 10 ids of 200k where the same table without it takes
-- 1.6 ms, sorted by id or not.  Made in one pass over the rows, not row by row as they arrive.
CREATE UNIQUE INDEX IF NOT EXISTS chunk_locations_id ON chunk_locations (id);

CREATE OR REPLACE TABLE chunk_locations_store AS
SELECT
    getvariable('store_version')::VARCHAR AS store_version,
    getvariable('store_fingerprint')::VARCHAR AS store_fingerprint,
    (SELECT count(*) FROM chunk_locations)::BIGINT AS chunk_count,
    timezone('UTC', now()) AS refreshed_at_utc;

SELECT c.deleted, s.chunk_count - (c.rows_before - c.deleted) AS inserted
FROM chunk_locations_change AS c, chunk_locations_store AS s;
