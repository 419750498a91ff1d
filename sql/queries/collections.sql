-- Queries of collections (projections/collections.py, app/services/collections.py). Table names are
-- unqualified on purpose: replay runs the projection's queries with search_path = chronos_replay, public.

-- name: created
INSERT INTO collections (name, description, monthly_budget_usd, created_at, position)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING;

-- name: budget_set
-- `default` has no CollectionCreated: its row may have to be made here (replay builds it after the load).
INSERT INTO collections (name, monthly_budget_usd, position) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET monthly_budget_usd = EXCLUDED.monthly_budget_usd, position = EXCLUDED.position;

-- name: ensure_default
INSERT INTO collections (name, description, created_at, position) VALUES ('default', '', NULL, 0)
ON CONFLICT (name) DO NOTHING;

-- name: list
-- Every collection with its document count (deleted documents left out).
SELECT c.name, c.description, c.monthly_budget_usd, c.created_at,
       count(d.document_id) FILTER (WHERE d.status <> 'deleted') AS documents
FROM collections c LEFT JOIN documents d ON d.collection = c.name
WHERE $1::text[] IS NULL OR c.name = ANY ($1::text[])
GROUP BY c.name ORDER BY c.name;

-- name: stats_documents
-- Documents by status, and their bytes (live documents only), per collection ($1: NULL = all).
SELECT collection, status, count(*) AS documents, coalesce(sum(size), 0)::bigint AS bytes
FROM documents
WHERE $1::text[] IS NULL OR collection = ANY ($1::text[])
GROUP BY collection, status;

-- name: stats_index
-- Chunks search serves and their vectors, per collection.
SELECT c.collection, count(*) AS chunks,
       coalesce(sum((SELECT count(*) FROM vectors v WHERE v.chunk_id = c.chunk_id)), 0)::bigint AS vectors
FROM chunk_rows c
WHERE c.serving AND ($1::text[] IS NULL OR c.collection = ANY ($1::text[]))
GROUP BY c.collection;

-- name: stats_spend
-- Spend this calendar month (UTC) of documents in each collection.
SELECT d.collection, sum(l.amount_usd) AS spent_usd
FROM cost_ledger l JOIN documents d USING (document_id)
WHERE l.recorded_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
  AND ($1::text[] IS NULL OR d.collection = ANY ($1::text[]))
GROUP BY d.collection;
