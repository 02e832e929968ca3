/* Write v_coverage_heatmap as a self-contained HTML page (inline CSS, no scripts): one row
   per module, one cell per channel (latest run of each), shaded from white (no chunk of the
   module in any top-k) to dark blue (every chunk), grey where the channel has no run.

   Parameter: out, the page's path relative to the catalog (default reports/coverage_heatmap.html,
   replaced if present).
     python bootstrap.py sql sql/write_coverage_heatmap.sql --catalog DIR */

SET VARIABLE heatmap_path = catalog_output_path(coalesce(getvariable('out'), 'reports/coverage_heatmap.html'), true);
-- Reset once read: DuckDB variables outlive the script.
RESET VARIABLE out;

CREATE OR REPLACE TEMP MACRO heatmap_cell(share) AS
CASE
    WHEN share IS NULL THEN '<td style="background:#eee">-</td>'
    ELSE printf(
        '<td style="background:rgb(%d,%d,255);color:%s">%d%%</td>',
        round(255 - 215 * share)::INTEGER,
        round(255 - 155 * share)::INTEGER,
        CASE WHEN share > 0.55 THEN '#fff' ELSE '#000' END,
        round(100 * share)::INTEGER
    )
END;

-- The page is one VARCHAR; a CSV without quoting, escaping or header writes it verbatim.
COPY (
    SELECT
        '<!DOCTYPE html>' || chr(10)
        || '<html><head><meta charset="utf-8"><title>Retrieval coverage by module</title>' || chr(10)
        || '<style>body{font-family:sans-serif}table{border-collapse:collapse}'
        || 'th,td{padding:4px 10px;border:1px solid #ddd;text-align:right}th.module{text-align:left}</style>'
        || '</head><body>' || chr(10)
        || '<h1>Retrieval coverage by module</h1>' || chr(10)
        || '<p>Share of each module''s chunks in any top-k of the latest run of each channel; '
        || 'never retrieved: chunks no run has returned.</p>' || chr(10)
        || '<table><tr><th class="module">module</th><th>chunks</th><th>indexed</th><th>never retrieved</th>'
        || '<th>faiss</th><th>bm25</th><th>hybrid</th></tr>' || chr(10)
        || coalesce(string_agg(
            '<tr><th class="module">' || replace(replace(replace(h.module, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')
            || '</th><td>' || h.chunks || '</td><td>' || h.indexed_chunks || '</td><td>' || h.never_retrieved
            || '</td>' || heatmap_cell(h.faiss_share) || heatmap_cell(h.bm25_share) || heatmap_cell(h.hybrid_share)
            || '</tr>',
            chr(10) ORDER BY h.module), '')
        || chr(10) || '</table></body></html>' AS page
    FROM v_coverage_heatmap AS h
) TO (getvariable('heatmap_path')) (FORMAT csv, HEADER false, QUOTE '', ESCAPE '');

SELECT getvariable('heatmap_path') AS heatmap_file, (SELECT count(*) FROM v_coverage_heatmap)::BIGINT AS modules;
