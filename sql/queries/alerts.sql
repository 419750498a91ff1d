-- Budget alerts (app/alerts/). Months are UTC calendar months, "YYYY-MM".

-- name: month_spend
-- A month's spend from the log (not the cost_ledger projection, which may be behind), each line
-- rounded as the ledger stores it (numeric(14, 8)), so the figure matches chronos costs.
SELECT coalesce(sum(round((data ->> 'amount_usd')::numeric, 8)), 0) AS spent_usd
FROM events
WHERE type = 'CostIncurred'
  AND recorded_at >= ($1 || '-01')::timestamp AT TIME ZONE 'UTC'
  AND recorded_at < (($1 || '-01')::timestamp + interval '1 month') AT TIME ZONE 'UTC';

-- name: current_months
-- This UTC month and the one before (late costs of last month are still checked).
SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC'), 'YYYY-MM') AS current,
       to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month', 'YYYY-MM') AS previous;

-- name: stored_budget
SELECT value::numeric AS budget_usd FROM settings WHERE key = 'monthly_budget_usd';

-- name: month_events
-- A month's alert stream, oldest first.
SELECT event_id, type, schema_version, data, recorded_at
FROM events WHERE stream_id = $1 ORDER BY stream_version;

-- name: try_lock
-- One process delivers an alert at a time (session lock, held through the HTTP attempts without a
-- transaction, so it holds back no subscriber).
SELECT pg_try_advisory_lock(hashtextextended('chronos-budget-alert:' || $1::text, 0)) AS locked;

-- name: unlock
SELECT pg_advisory_unlock(hashtextextended('chronos-budget-alert:' || $1::text, 0));
