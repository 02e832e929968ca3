/* Sample semantic search over the demo store: for a few questions, the three chunks whose
   embeddings have the highest inner product with the question's embedding. */
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
    c.uri || ':' || c.start_line || '-' || c.end_line AS location,
    c.symbols AS symbols,
    array_inner_product(c.embedding, e.query_vector)::DECIMAL(5, 3) AS score
FROM embedded AS e
CROSS JOIN chunks AS c
QUALIFY row_number() OVER (
    PARTITION BY e.question ORDER BY array_inner_product(c.embedding, e.query_vector) DESC
) <= 3
ORDER BY question, score DESC;
