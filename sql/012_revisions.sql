-- Logical documents and revisions (docs/revisions.md): the documents row says which revision is the
-- latest (its status is about it) and which one search answers from. The documents projection is
-- rebuilt from the log (its state gains fields), as in 009.
ALTER TABLE documents ADD COLUMN document_key text;
ALTER TABLE documents ADD COLUMN revision integer NOT NULL DEFAULT 1;
ALTER TABLE documents ADD COLUMN serving_revision integer;
CREATE INDEX documents_key_idx ON documents (document_key) WHERE document_key IS NOT NULL;
DELETE FROM documents;
UPDATE subscriptions SET tx_id = '0'::xid8, position = 0, updated_at = now() WHERE name = 'projection:documents';

-- Which documents a source holds (folder and Directus sync look them up in the log).
CREATE INDEX events_upload_key_idx ON events ((data ->> 'key') text_pattern_ops) WHERE type = 'DocumentUploaded';
