-- Embeddings already made (embedding_cache is filled by the projections from ChunksEmbedded events;
-- the embed stage only reads it). A text embedded for several documents has one row per document:
-- any of them will do, the first by document_id is taken so the answer is deterministic.

-- name: cached_embeddings
-- $1 model (provider-qualified), $2 dimensions, $3 text_sha256[]
SELECT DISTINCT ON (text_sha256) text_sha256, embedding
FROM embedding_cache
WHERE model = $1 AND dimensions = $2 AND text_sha256 = ANY($3::text[])
ORDER BY text_sha256, document_id;

-- name: current_chunk_sets
-- The DocumentChunked of each document's current chunk set (documents.chunk_set_id: what the embed stage
-- embeds next, served by search yet or not), for the reprocess quote.
SELECT DISTINCT ON (d.document_id) d.document_id, e.schema_version, e.data
FROM documents d
JOIN events e ON e.stream_id = 'document-' || d.document_id::text AND e.type = 'DocumentChunked'
             AND e.data ->> 'chunk_set_id' = d.chunk_set_id::text
WHERE d.document_id = ANY($1::uuid[]) AND d.status <> 'deleted'
ORDER BY d.document_id, e.position;

-- name: cached_text_hashes
-- $1 model (provider-qualified), $2 dimensions, $3 text_sha256[]: which of them the cache holds.
SELECT DISTINCT text_sha256 FROM embedding_cache
WHERE model = $1 AND dimensions = $2 AND text_sha256 = ANY($3::text[]);

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
