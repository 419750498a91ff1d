-- name: progress
-- Stage progress of a set of documents, straight from the log (independent of projection lag).
SELECT stream_id,
       bool_or(type = 'DocumentConverted') AS converted,
       bool_or(type = 'DocumentChunked') AS chunked,
       bool_or(type = 'ChunksEmbedded') AS embedded,
       bool_or(type = 'DocumentDeleted') AS deleted,
       (array_agg(data ->> 'error_class' || ': ' || (data ->> 'message') ORDER BY stream_version DESC)
            FILTER (WHERE type IN ('ConversionFailed', 'ChunkingFailed', 'EmbeddingFailed')
                    AND (data ->> 'final')::boolean))[1] AS failure
FROM events
WHERE stream_id = ANY ($1::text[])
GROUP BY stream_id;
