-- Reconciling the ledger with a provider's bill (app/convert/billing.py). Days are UTC days, as in
-- the provider's report; amounts are summed from the log itself.

-- name: modal_costs_by_day
-- Modal cost lines recorded by the stages, by the UTC day they were recorded ($3: the adjustments'
-- stream, counted by the day they adjust instead).
SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, sum(round((data ->> 'amount_usd')::numeric, 8)) AS usd
FROM events
WHERE type = 'CostIncurred' AND data ->> 'provider' = 'modal'
  AND recorded_at >= $1 AND recorded_at < $2 AND stream_id <> $3
GROUP BY 1;

-- name: adjustments_by_day
-- Adjustments already appended by earlier reconciliations, by the billed day they adjust.
SELECT (data -> 'details' ->> 'billed_day')::date AS day, sum(round((data ->> 'amount_usd')::numeric, 8)) AS usd
FROM events
WHERE stream_id = $1 AND type = 'CostIncurred'
GROUP BY 1;
