/* An empty chunk_locations, without its key, before sql/update_chunk_locations.sql fills it from
   every part of the store (codeintel/chunk_locations.py): the first time, for a table of no store
   version, and when the store changed by more than added parts and hidden ids (an import, a
   compaction).  The columns are udfs/store_schema.py's LOCATION_COLUMNS, registered as
   chunk_location_schema. */

-- Its key is made by the update, after the rows: an ART index built row by row took 3x as long
-- to write at every later CHECKPOINT (60 ms against 20 at 25k chunks) as one built in one pass.
CREATE OR REPLACE TABLE chunk_locations AS SELECT * FROM chunk_location_schema;

DROP TABLE IF EXISTS chunk_locations_store;
