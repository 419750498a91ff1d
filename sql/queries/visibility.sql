-- Which collection a document belongs to (app/services/visibility.py): the documents projection keeps
-- the rows of deleted documents too, so a deleted document stays in its collection.

-- name: document_collections
SELECT document_id, collection FROM documents WHERE document_id = ANY ($1::uuid[]);

-- name: uploaded_collections
-- Documents the projection has not reached yet: the collection of their first upload event (an upload
-- written before collections existed has none: 'default').
SELECT DISTINCT ON (stream_id) stream_id, coalesce(data ->> 'collection', 'default') AS collection
FROM events
WHERE stream_id = ANY ($1::text[]) AND type = 'DocumentUploaded'
ORDER BY stream_id, stream_version;
