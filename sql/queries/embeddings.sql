-- Embeddings already made (embedding_cache is filled by the projections from ChunksEmbedded events;
-- the embed stage only reads it).

-- name: cached_embeddings
-- $1 model (provider-qualified), $2 dimensions, $3 text_sha256[]
SELECT text_sha256, embedding
FROM embedding_cache
WHERE model = $1 AND dimensions = $2 AND text_sha256 = ANY($3::text[]);
