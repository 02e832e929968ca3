/* chunk_modules: the module each chunk belongs to: the module with the longest prefix of its uri. */
CREATE OR REPLACE VIEW chunk_modules AS
SELECT
    c.id::BIGINT AS chunk_id,
    c.uri::VARCHAR AS uri,
    arg_max(m.module, length(m.prefix))::VARCHAR AS module
FROM chunks AS c
JOIN modules AS m ON starts_with(c.uri, m.prefix)
GROUP BY c.id, c.uri;
