-- Embeddings already made (embedding_cache is filled by the projections from ChunksEmbedded events;
-- the embed stage only reads it). A text embedded for several documents has one row per document:
-- any of them will do, the first by document_id is taken so the answer is deterministic.

-- name: cached_embeddings
-- $1 model (provider-qualified), $2 dimensions, $3 text_sha256[]
SELECT DISTINCT ON (text_sha256) text_sha256, embedding
FROM embedding_cache
WHERE model = $1 AND dimensions = $2 AND text_sha256 = ANY($3::text[])
ORDER BY text_sha256, document_id;

-- name: quote_uncached_chunks
-- Chunks search serves now (`chunks`, the index projection's serving sets) whose text the cache lacks for the model and size, one
-- per (document, text) (the embed stage sends a repeated text once per document). The token count is
-- taken as is when the chunks were counted with the model's tokenizer; otherwise the text comes along
-- to be counted.
-- $1 document ids, $2 model (provider-qualified), $3 dimensions, $4 the model's tokenizer name
SELECT DISTINCT ON (c.document_id, c.text_sha256)
       c.document_id, c.text_sha256, c.token_count,
       CASE WHEN s.parameters ->> 'tokenizer' = $4 AND c.token_count IS NOT NULL THEN NULL ELSE c.text END AS text
FROM chunks c
JOIN chunk_sets s ON s.document_id = c.document_id AND s.chunk_set_id = c.chunk_set_id
WHERE c.document_id = ANY($1::uuid[])
  AND NOT EXISTS (SELECT 1 FROM embedding_cache e
                  WHERE e.model = $2 AND e.dimensions = $3 AND e.text_sha256 = c.text_sha256)
ORDER BY c.document_id, c.text_sha256;

-- name: open_embedding_batches
-- Batch API jobs submitted and not finished (the poller's work list), oldest first.
SELECT s.event_id, s.stream_id, s.schema_version, s.data
FROM events s
WHERE s.type = 'EmbeddingBatchSubmitted'
  AND NOT EXISTS (SELECT 1 FROM events f WHERE f.stream_id = s.stream_id AND f.type = 'EmbeddingBatchFinished')
ORDER BY s.position;

-- name: embedding_batches
-- Every Batch API job with its end, newest first.
SELECT s.schema_version AS submitted_version, s.data AS submitted, s.recorded_at AS submitted_at,
       f.schema_version AS finished_version, f.data AS finished, f.recorded_at AS finished_at
FROM events s
LEFT JOIN events f ON f.stream_id = s.stream_id AND f.type = 'EmbeddingBatchFinished'
WHERE s.type = 'EmbeddingBatchSubmitted'
ORDER BY s.position DESC
LIMIT $1;
