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
