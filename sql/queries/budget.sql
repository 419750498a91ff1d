-- Per-collection budgets (app/services/budget.py). A cost line's collection is its document's.

-- name: collection_budgets
-- The collections projection's budgets ($1 NULL: every collection).
SELECT name, monthly_budget_usd FROM collections WHERE ($1::text[] IS NULL OR name = ANY ($1::text[])) ORDER BY name;

-- name: spend_month_by_collection
SELECT d.collection, sum(c.amount_usd) AS usd
FROM cost_ledger c JOIN documents d ON d.document_id = c.document_id
WHERE c.recorded_at >= date_trunc('month', now()) AND ($1::text[] IS NULL OR d.collection = ANY ($1::text[]))
GROUP BY 1 ORDER BY 1;

-- name: spend_month_by_stage_provider_in
SELECT c.stage, c.provider, sum(c.amount_usd) AS usd
FROM cost_ledger c JOIN documents d ON d.document_id = c.document_id
WHERE c.recorded_at >= date_trunc('month', now()) AND d.collection = ANY ($1::text[])
GROUP BY 1, 2 ORDER BY 3 DESC;
