-- Collections and metadata (issue 15, docs/collections.md). Every document belongs to one collection
-- and carries a JSON object of metadata. Existing installs: every existing document is in `default`
-- by the column default, with no metadata; nothing is re-converted or re-embedded (the projections
-- are not reset: their rows are already right for a log without collections).
ALTER TABLE documents ADD COLUMN collection text NOT NULL DEFAULT 'default';
ALTER TABLE documents ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
CREATE INDEX documents_collection_idx ON documents (collection);
CREATE INDEX documents_metadata_idx ON documents USING gin (metadata jsonb_path_ops);

-- The index projection copies each document's collection and current metadata onto its chunk rows,
-- so search filters without a join; a metadata update rewrites them in the projection's transaction.
ALTER TABLE index_documents ADD COLUMN collection text NOT NULL DEFAULT 'default';
ALTER TABLE index_documents ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
ALTER TABLE chunk_rows ADD COLUMN collection text NOT NULL DEFAULT 'default';
ALTER TABLE chunk_rows ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}';
CREATE INDEX chunk_rows_collection_idx ON chunk_rows (collection) WHERE serving;

-- The collections projection (projections/collections.py): CollectionCreated / CollectionBudgetSet of
-- streams collection-<name>. `default` always exists (it has no event: created_at NULL, position 0).
CREATE TABLE collections (
    name               text PRIMARY KEY,
    description        text NOT NULL DEFAULT '',
    monthly_budget_usd numeric NULL,
    created_at         timestamptz,
    position           bigint NOT NULL DEFAULT 0
);
INSERT INTO collections (name, description, created_at, position) VALUES ('default', '', NULL, 0);
