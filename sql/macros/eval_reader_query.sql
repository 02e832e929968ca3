/* eval_reader_query(path_variable, what) -> VARCHAR: the SQL text that reads the file named by
   the DuckDB variable path_variable, chosen by its extension (.parquet; .csv or .tsv with a
   header; .jsonl, .ndjson or .json).  query() runs the text, so the path stays a bound variable
   and is never spliced into SQL.  what names the script and parameter in the error for any
   other file (sql/load_queries.sql passes 'load_queries.sql: queries_path').  No defaults. */

CREATE OR REPLACE TEMP MACRO eval_reader_query(path_variable, what) AS
CASE
    WHEN regexp_matches(lower(getvariable(path_variable)::VARCHAR), '\.parquet$')
        THEN 'SELECT * FROM read_parquet(getvariable(''' || path_variable || '''))'
    WHEN regexp_matches(lower(getvariable(path_variable)::VARCHAR), '\.(csv|tsv)$')
        THEN 'SELECT * FROM read_csv(getvariable(''' || path_variable || '''), header = true)'
    WHEN regexp_matches(lower(getvariable(path_variable)::VARCHAR), '\.(jsonl|ndjson|json)$')
        THEN 'SELECT * FROM read_json(getvariable(''' || path_variable || '''))'
    -- No reader fits: refused in check_argument's words.
    ELSE check_argument(getvariable(path_variable)::VARCHAR, what, false,
                        'name a .parquet, .csv or .jsonl file', '')
END;
