/* modules: the repository's modules from store/CURRENT/modules.jsonl (derived from directories
   and packages at ingest, or a user's own file with the same keys; metrics may then be NULL). */
CREATE OR REPLACE VIEW modules AS
SELECT
    m.module::VARCHAR AS module,
    m.prefix::VARCHAR AS prefix,
    coalesce(m.tags, [])::VARCHAR[] AS tags,
    m.file_count::BIGINT AS file_count,
    m.chunk_count::BIGINT AS chunk_count,
    m.line_count::BIGINT AS line_count
FROM read_json(
    'store/CURRENT/modules.jsonl',
    format = 'newline_delimited',
    columns = {
        module: 'VARCHAR', prefix: 'VARCHAR', tags: 'VARCHAR[]',
        file_count: 'BIGINT', chunk_count: 'BIGINT', line_count: 'BIGINT'
    }
) AS m;
