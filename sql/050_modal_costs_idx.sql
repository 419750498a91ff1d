-- `chronos costs reconcile --provider modal` sums the log's Modal cost lines by day (from the log,
-- not from the cost_ledger projection, which may be behind): a partial index instead of a scan of
-- every event.
CREATE INDEX events_modal_costs_idx ON events (recorded_at)
    WHERE type = 'CostIncurred' AND data ->> 'provider' = 'modal';
