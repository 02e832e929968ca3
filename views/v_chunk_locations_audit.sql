/* v_chunk_locations_audit: audit, expected empty: chunks of the current store whose row in the
   keyed chunk_locations table is missing or differs, and rows there of no current chunk.  Every
   writing session refreshes the table when the store changes; rows here mean a writer was killed
   between publishing a store version and catalog.duckdb: run any writing command (e.g.
   `python bootstrap.py views`) to refresh it. */
CREATE OR REPLACE VIEW v_chunk_locations_audit AS
WITH
    -- udfs/store_schema.py's LOCATION_COLUMNS, in order (tests/test_chunk_locations.py checks it).
    store_rows AS (SELECT c.id, c.uri, c.start_byte, c.end_byte, c.start_line, c.end_line FROM chunks AS c),
    -- Whole rows, column by column.
    unmatched_store AS (SELECT * FROM store_rows EXCEPT SELECT * FROM chunk_locations),
    unmatched_table AS (SELECT * FROM chunk_locations EXCEPT SELECT * FROM store_rows)
SELECT
    coalesce(s.id, t.id)::BIGINT AS id,
    CASE
        WHEN t.id IS NULL THEN 'missing from chunk_locations'
        WHEN s.id IS NULL THEN 'not a chunk of the current store'
        ELSE 'differs from chunks'
    END::VARCHAR AS problem
FROM unmatched_store AS s
FULL OUTER JOIN unmatched_table AS t ON t.id = s.id;
