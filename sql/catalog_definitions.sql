/* One row per macro and view this connection sees: its name and the SQL that defines it.
   bootstrap.core_owning_names reads the bodies to find what calls a UDF that runs its own
   thread pool. */
SELECT
    f.function_name::VARCHAR AS name,
    f.macro_definition::VARCHAR AS body
FROM duckdb_functions() AS f
WHERE f.macro_definition IS NOT NULL AND NOT f.internal
UNION ALL
SELECT
    v.view_name::VARCHAR AS name,
    v.sql::VARCHAR AS body
FROM duckdb_views() AS v
WHERE NOT v.internal
