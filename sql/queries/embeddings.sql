-- Embeddings already made (embedding_cache is filled by the projections from ChunksEmbedded events;
-- the embed stage only reads it). A text embedded for several documents has one row per document:
-- any of them will do, the first by document_id is taken so the answer is deterministic.

-- name: cached_embeddings
-- $1 model (provider-qualified), $2 dimensions, $3 text_sha256[]
SELECT DISTINCT ON (text_sha256) text_sha256, embedding
FROM embedding_cache
WHERE model = $1 AND dimensions = $2 AND text_sha256 = ANY($3::text[])
ORDER BY text_sha256, document_id;
