/* Per-module summary of the chunk store: files, chunks, lines, and the share of chunks
   that define at least one symbol, largest modules first. */
SELECT
    m.module AS module,
    m.file_count AS files,
    count(c.id) AS chunks,
    m.line_count AS lines,
    round(avg(CASE WHEN len(c.symbols) > 0 THEN 1.0 ELSE 0.0 END), 2) AS share_with_symbols,
    bar(count(c.id), 0, max(count(c.id)) OVER (), 30) AS chunk_bar
FROM modules AS m
LEFT JOIN chunk_modules AS cm ON cm.module = m.module
LEFT JOIN chunks AS c ON c.id = cm.chunk_id
GROUP BY m.module, m.file_count, m.line_count
ORDER BY chunks DESC, module;
