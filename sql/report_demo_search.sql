/* Sample semantic search over the demo store: for a few questions, the three chunks the
   published FAISS index ranks highest (faiss_search through LATERAL, one search per question;
   each hit carries its location, chunks adds the symbols). */
WITH questions(question) AS (
    VALUES
        ('parse a JSON document from a string'),
        ('send an HTTP GET request and read the response'),
        ('rotate log files when they grow too large'),
        ('run tasks concurrently in a pool of threads')
),
embedded AS (
    SELECT question, embed(question) AS query_vector FROM questions
)
SELECT
    e.question AS question,
    hit.rank AS rank,
    hit.uri || ':' || hit.start_line || '-' || hit.end_line AS location,
    c.symbols AS symbols,
    hit.score::DECIMAL(5, 3) AS score
FROM embedded AS e,
LATERAL faiss_search(e.query_vector, k := 3) AS hit
JOIN chunks AS c ON c.id = hit.chunk_id
ORDER BY question, rank;
